"""Command-line interface, generated from the config dataclasses.

Each subcommand lives in ``neurorit_lens/commands/<name>.py`` and defines ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Flags come from the config
dataclasses through :func:`add_config_args`, so the CLI and the Python API share one
set of names and defaults. ``main(argv)`` is testable and returns the exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import pkgutil
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("neurorit_lens")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return hint, False


def _parser_for(hint: Any):
    base, optional = _unwrap_optional(hint)
    origin = typing.get_origin(base)
    if origin is tuple:
        elem = typing.get_args(base)[0]

        def parse_tuple(s: str, elem=elem, optional=optional):
            if optional and s.lower() in ("", "none", "all"):
                return None
            return tuple(elem(x.strip()) for x in s.split(",") if x.strip())

        return parse_tuple
    if base in (int, float, str):
        if optional:
            return lambda s, base=base: None if s.lower() == "none" else base(s)
        return base
    return str


def add_config_args(
    parser: argparse.ArgumentParser,
    cls: type,
    exclude: Sequence[str] = (),
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of dataclass ``cls`` (``--field-name``) to ``parser``."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
        dest = prefix + f.name
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        if hint is bool:
            group.add_argument(_flag(prefix + f.name), dest=dest, action=argparse.BooleanOptionalAction,
                               default=default, help=f"(default: {shown})")
        else:
            group.add_argument(_flag(prefix + f.name), dest=dest, type=_parser_for(hint), default=default,
                               help=f"(default: {shown})", metavar=f.name.upper())


def config_from_args(args: argparse.Namespace, cls: type, prefix: str = "", **overrides: Any):
    """Build ``cls`` from the flags :func:`add_config_args` added (raises ``ValueError`` if invalid)."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, prefix + f.name):
            kwargs[f.name] = getattr(args, prefix + f.name)
    kwargs.update(overrides)
    return cls(**kwargs)


def _command_modules() -> list[types.ModuleType]:
    mods = []
    # found next to this file, not via `from neurorit_lens import cli` (that is an import cycle)
    package, here = __name__.rsplit(".", 1)[0], os.path.dirname(os.path.abspath(__file__))
    for info in sorted(pkgutil.iter_modules([here]), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{package}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurorit",
        description="Neuro-RIT on TransformerLens: evaluate RAG noise robustness, mine relevant/"
        "irrelevant-context MLP neurons, test them causally, and tune at neuron and layer level.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, NotADirectoryError, PermissionError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"neurorit {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
