"""The flags of ``recserve serve`` (the command itself is :mod:`recserve.cli`).

One flag per setting; each defaults to its ``RECSERVE_*`` environment variable, then to the
built-in default.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from service.errors import describe_problems
from service.settings import MACHINE_DEFAULTS, BatchingSettings, Settings


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_setting(parser: argparse._ActionsContainer, name: str, field: FieldInfo, env: str) -> None:
    """One flag for one settings field; its default is None so that unset flags change nothing."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in args if a is not type(None))
    default = field.get_default(call_default_factory=True)
    shown = MACHINE_DEFAULTS[name]() if name in MACHINE_DEFAULTS else default
    shown = "unset" if shown is None else shown
    help_text = f"{field.description or name.replace('_', ' ')} (env {env}; default: {shown})"
    kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is typing.Literal:
        kwargs["choices"] = typing.get_args(annotation)
    elif annotation is SecretStr:
        kwargs["metavar"] = "TOKEN"
    elif annotation in (int, float, Path):
        kwargs["type"] = annotation
    parser.add_argument(_flag(name), **kwargs)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`Settings` (batching fields without a prefix)."""
    for name, field in Settings.model_fields.items():
        if name == "batching":
            continue
        _add_setting(parser, name, field, f"RECSERVE_{name.upper()}")
    group = parser.add_argument_group("batching (server-wide; a model's config.json may override)")
    for name, field in BatchingSettings.model_fields.items():
        _add_setting(group, name, field, f"RECSERVE_BATCHING__{name.upper()}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    top = {k: given[k] for k in Settings.model_fields if k in given and k != "batching"}
    batching = {k: given[k] for k in BatchingSettings.model_fields if k in given}
    if batching:
        base = Settings().batching.model_dump()
        top["batching"] = BatchingSettings(**{**base, **batching})
    return Settings(**top)


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Serve with the settings the flags (and the environment) give; a usage error otherwise."""
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        parser.error(f"invalid settings: {describe_problems(exc.errors())}")
    from service.server import serve

    return serve(settings)
