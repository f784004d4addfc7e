"""Config fields that describe themselves, so that a command can offer each one as an option.

A setting is declared once, as a field of a config dataclass: the field holds the default and
:func:`setting` adds what a reader of ``--help`` needs (a help text, the topic it belongs to,
its lower bound). ``fedmedclip simulate`` and ``fedmedclip demo`` build one option per
described field from this, so a new field is offered without touching the command and no
default is copied by hand. The config checks the same bounds itself, so a library caller and
a command user meet the same rule.

Nothing here imports a command-line library or torch: the library says what a setting is,
the commands decide how to show it, and ``fedmedclip --help`` stays quick.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fedmedclip.enums import parse_choice

_T = TypeVar("_T")
_METADATA_KEY = "fedmedclip.setting"


class Topic(StrEnum):
    """What part of a run a setting is about; ``simulate --help`` shows one panel per topic."""

    data = "Data"
    method = "Method"
    run = "Output and run"
    privacy = "Privacy"


@dataclass(frozen=True)
class Description:
    """What a command needs to offer one setting as an option."""

    help: str
    topic: Topic | None = None
    minimum: float | None = None
    """Smallest allowed value (inclusive), checked by :func:`check_minimums`."""
    flag: str | None = None
    """The option's name where it is not the field's (``--aggregation`` for
    ``aggregation_rule``, kept from before the options were generated)."""


def setting(
    default: _T,
    help: str,
    *,
    topic: Topic | None = None,
    minimum: float | None = None,
    flag: str | None = None,
) -> _T:
    """A dataclass field with ``default`` that describes itself (see the module docstring)."""
    described = Description(help, topic, minimum, flag)
    return dataclasses.field(default=default, metadata={_METADATA_KEY: described})


@dataclass(frozen=True)
class DescribedField:
    """One described field of a config class, its annotation resolved to a type."""

    name: str
    type: Any
    default: Any
    description: Description


@functools.cache
def described_fields(config_class: type) -> tuple[DescribedField, ...]:
    """The fields of ``config_class`` declared with :func:`setting`, in declaration order.

    Fields without a description (a preset the command does not offer) are left out.
    """
    hints = typing.get_type_hints(config_class)
    return tuple(
        DescribedField(field.name, hints[field.name], field.default, field.metadata[_METADATA_KEY])
        for field in dataclasses.fields(config_class)
        if _METADATA_KEY in field.metadata
    )


def check_minimums(config: object) -> None:
    """Raise a ValueError naming the first described field of ``config`` below its minimum."""
    for field in described_fields(type(config)):
        minimum, value = field.description.minimum, getattr(config, field.name)
        if minimum is not None and value is not None and value < minimum:
            raise ValueError(f"{field.name} must be at least {minimum:g}")


def coerce_choices(config: object) -> None:
    """Turn every ``StrEnum`` field of a frozen ``config`` into its member.

    A plain string is accepted (callers and JSON files give one) and replaced by the member
    it names, so the field's type holds; any other value is a ValueError that names the
    allowed ones. Called from ``__post_init__``.
    """
    for field in described_fields(type(config)):
        if isinstance(field.type, type) and issubclass(field.type, StrEnum):
            member = parse_choice(field.type, getattr(config, field.name), field.name)
            object.__setattr__(config, field.name, member)
