"""JSON from peers: documents that would crash or stall ``json.loads`` get one clear error."""

import pytest

from fedmedclip.bounded_json import JsonLimitError, loads_bounded, nesting_depth


def test_a_small_shallow_document_parses() -> None:
    assert loads_bounded(b'{"a": [1, {"b": "[[["}]}', max_bytes=100, max_depth=3) == {
        "a": [1, {"b": "[[["}]
    }


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert nesting_depth('{"a": "[[[{{{", "b": [1]}') == 2
    assert nesting_depth(r'["\"[[[", []]') == 2


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("[" * 60_000 + "]" * 60_000, "nests 60000 levels deep, more than 32"),
        ("1" * 200, "200 bytes, more than 100"),
        ("[" + "9" * 25 + "]", "an integer has more than 20 digits"),
        (b"\xff\xfe", "not UTF-8"),
        ('{"a": }', "not valid JSON"),
    ],
    ids=["deep", "large", "long-integer", "not-utf8", "invalid"],
)
def test_hostile_documents_are_refused_with_the_reason(document, message) -> None:
    max_bytes = 100 if document == "1" * 200 else 1_000_000
    with pytest.raises(JsonLimitError, match=message):
        loads_bounded(document, max_bytes=max_bytes, max_depth=32)


def test_a_64_bit_integer_still_fits() -> None:
    assert loads_bounded(str(-(2**63)), max_bytes=100, max_depth=1) == -(2**63)
