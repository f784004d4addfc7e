"""The task's class names are canonical: NFC, unique in that form, no control characters."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from fedmedclip.schemas import TaskSpec


def test_class_names_are_stored_in_nfc() -> None:
    task = TaskSpec(class_names=["cafe\u0301", " nevus "])
    assert task.class_names == ["caf\u00e9", "nevus"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["caf\u00e9", "cafe\u0301"], "unique (compared in Unicode NFC)"),
        (["a\u0000b", "nevus"], "forbidden character (U+0000)"),
        (["a/b", "nevus"], "forbidden character ('/')"),
        (["tab\there", "nevus"], "forbidden character (U+0009)"),
        (["  ", "nevus"], "must not be empty"),
    ],
)
def test_bad_class_names_are_refused_with_a_clear_message(names: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        TaskSpec(class_names=names)
