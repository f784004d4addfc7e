"""JSON from untrusted peers, parsed with limits on size, nesting and integer length.

``json.loads`` alone lets a small document do damage: ``[[[[...]]]]`` nested 60,000 deep
raises ``RecursionError`` and a 5,000-digit integer raises a bare ``ValueError`` (Python's
int/str conversion limit), neither of which callers expect from a parser. Here the size is
checked before parsing, the nesting depth is measured without recursion, integers longer
than a database can hold are refused while parsing, and every failure is one
:class:`JsonLimitError` whose message names the problem.
"""

from __future__ import annotations

import json
import re
from typing import Any

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")

MAX_INT_DIGITS = 20
"""Enough for any 64-bit integer (19 digits and a sign); nothing we read needs more."""


class JsonLimitError(ValueError):
    """The document is not JSON, or is larger, deeper or has longer integers than allowed."""


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in ``text`` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonLimitError(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def loads_bounded(data: bytes | str, *, max_bytes: int, max_depth: int) -> Any:
    """Parse ``data`` as JSON, refusing documents over ``max_bytes`` or ``max_depth``."""
    if len(data) > max_bytes:
        raise JsonLimitError(f"JSON document is {len(data)} bytes, more than {max_bytes}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise JsonLimitError(f"JSON document is not UTF-8 (byte {exc.start})") from exc
    if (depth := nesting_depth(text)) > max_depth:
        raise JsonLimitError(f"JSON nests {depth} levels deep, more than {max_depth}")
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"not valid JSON: {exc.msg} at position {exc.pos}") from exc
