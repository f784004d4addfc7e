"""Typer options built from a config dataclass, so that each setting is declared once.

:func:`with_config_options` gives a command one option per described field of a config class
(:mod:`fedmedclip.config_fields`): the option takes the field's name (or its ``flag``), type,
default, help text, minimum and topic (its ``--help`` panel). A field added to the config is
offered by the command without an edit here or there. The command receives the values as one
``settings`` mapping and builds its config with :func:`config_from`, inside its own error
handling, so that a refused value reads like any other refused setting.

A ``tuple[float, ...]`` field is one comma-separated option (``--lr-search 0.3,1,3``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from fedmedclip.config_fields import DescribedField, described_fields

_Config = TypeVar("_Config")
SETTINGS = "settings"
"""The parameter through which a decorated command receives its config options' values."""


def _is_float_list(field: DescribedField) -> bool:
    return field.type == tuple[float, ...]


def _parameter(field: DescribedField, default: Any) -> inspect.Parameter:
    """The keyword parameter Typer reads one option from: ``Annotated[type, typer.Option]``."""
    described = field.description
    kind = field.type
    if _is_float_list(field):
        kind, default = str, ",".join(f"{factor:g}" for factor in default)
    option = typer.Option(
        *([described.flag] if described.flag else []),
        help=described.help,
        min=described.minimum,
        rich_help_panel=described.topic.value if described.topic else None,
    )
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, option],
    )


def with_config_options(
    config_class: type, **command_defaults: Any
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a command that takes ``settings``: it gets one option per described field of
    ``config_class`` after its own options, and their values in ``settings``.

    ``command_defaults`` names the few fields whose default the command sets on purpose
    apart from the config's (``simulate --device auto``, resolved when the command runs).
    """
    fields = described_fields(config_class)
    unknown = set(command_defaults) - {field.name for field in fields}
    if unknown:
        raise TypeError(f"{config_class.__name__} has no described field {sorted(unknown)}")

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(command, eval_str=True)
        if SETTINGS not in own.parameters:
            raise TypeError(f"{command.__name__} must take a {SETTINGS!r} parameter")
        parameters = [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for parameter in own.parameters.values()
            if parameter.name != SETTINGS
        ]
        parameters += [
            _parameter(field, command_defaults.get(field.name, field.default)) for field in fields
        ]

        def run(**values: Any) -> None:
            settings = {field.name: values.pop(field.name) for field in fields}
            command(**values, **{SETTINGS: settings})

        run.__name__, run.__qualname__, run.__doc__ = (
            command.__name__,
            command.__qualname__,
            command.__doc__,
        )
        run.__module__ = command.__module__
        run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        return run

    return decorate


def config_from(config_class: type[_Config], settings: Mapping[str, Any], **values: Any) -> _Config:
    """The config the options' ``settings`` describe, with ``values`` in place of theirs.

    Raises what the config raises for a refused value (a ValueError), and a ValueError for
    a comma-separated list that is not one of numbers. An empty list means the default.
    """
    given = dict(settings)
    for field in described_fields(config_class):
        if _is_float_list(field) and field.name not in values:
            factors = tuple(float(part) for part in given[field.name].split(",") if part.strip())
            given[field.name] = factors or field.default
    return config_class(**(given | values))
