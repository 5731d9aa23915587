# gservers/settings.py -- one source of truth per setting.
#
# Strategy: every program has one frozen dataclass whose fields carry their
# help text, flag and value parser as field metadata.  The entry modules
# (``gservers/backend/__main__.py``, ``lb/__main__.py``) own argument parsing;
# they ask this module to add one flag per field and to merge the three
# sources in order -- field default, then the TOML file, then the flags --
# checking every value with the field's own parser, so that a bad value from
# either source is reported the same way: one line naming the setting.
from __future__ import annotations

import argparse
import dataclasses
import tomllib
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A setting has a bad value; the message names it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def setting(default: Any, help: str, *, parse: Callable[[Any], Any] | None = None,
            flag: str | None = None, metavar: str | None = None,
            positional: bool = False, repeat: bool = False) -> Any:
    """A dataclass field described for the CLI and the TOML file.

    ``parse`` turns a flag string or a TOML value into the field's value and
    raises ``ValueError`` with a short reason when it cannot.  ``repeat`` makes
    the flag repeatable (its values form a tuple)."""
    meta = {"help": help, "parse": parse, "flag": flag, "metavar": metavar,
            "positional": positional, "repeat": repeat}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use an immutable default")
    return dataclasses.field(default=default, metadata=meta)


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one argument per field of ``cls``; unset flags stay absent."""
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default
        shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{meta['help']} (default: {shown})"
        if meta["positional"]:
            parser.add_argument(f.name, nargs="?", default=argparse.SUPPRESS,
                                metavar=meta["metavar"] or f.name.upper(), help=help_text)
            continue
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text,
                                  "metavar": meta["metavar"] or f.name.upper()}
        if meta["repeat"]:
            kwargs["action"] = "append"
        if isinstance(default, bool):
            kwargs = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text,
                      "action": argparse.BooleanOptionalAction}
        parser.add_argument(flag, **kwargs)


def toml_keys(cls: type) -> dict[str, str]:
    """TOML key -> field name (keys use dashes, like the flags)."""
    return {f.name.replace("_", "-"): f.name for f in dataclasses.fields(cls)}


def build(cls: type[T], namespace: argparse.Namespace, toml_path: str | None = None) -> T:
    """Merge defaults < TOML file < flags into a ``cls``; raise ConfigError."""
    values: dict[str, Any] = {}
    if toml_path:
        values.update(_read_toml(cls, toml_path))
    given = vars(namespace)
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
    converted: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        parse = f.metadata.get("parse")
        raw = values[f.name]
        try:
            if f.metadata.get("repeat"):
                items = raw if isinstance(raw, (list, tuple)) else [raw]
                converted[f.name] = tuple(parse(v) if parse else v for v in items)
            else:
                converted[f.name] = parse(raw) if parse else raw
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{_label(f)}: bad value {raw!r}: {exc}") from None
    try:
        return cls(**converted)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _label(f: dataclasses.Field) -> str:
    if f.metadata.get("positional"):
        return f.metadata.get("metavar") or f.name.upper()
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _read_toml(cls: type, path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    keys = toml_keys(cls)
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = keys.get(key) or (key if key in keys.values() else None)
        if name is None:
            raise ConfigError(f"--config: {path}: unknown key {key!r} "
                              f"(known: {', '.join(sorted(keys))})")
        out[name] = value
    return out


# -- value parsers shared by the programs ----------------------------------

def boolean(value: Any) -> bool:
    """true or false (a TOML boolean, or the flag / --no-flag pair)."""
    if isinstance(value, bool):
        return value
    raise ValueError("expected true or false")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("not a whole number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("not a whole number") from None


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("not a number") from None


def positive_int(value: Any) -> int:
    """An integer >= 1."""
    number = _int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def non_negative_int(value: Any) -> int:
    """An integer >= 0."""
    number = _int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def fraction(value: Any) -> float:
    """A number from 0 to 1."""
    number = _float(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def port(value: Any) -> int:
    """A TCP port number, 0 (any free port) to 65535."""
    number = _int(value)
    if not 0 <= number <= 65535:
        raise ValueError("a port is 0 to 65535")
    return number


def seconds(value: Any) -> float:
    """A duration in seconds, > 0."""
    number = _float(value)
    if not number > 0 or number != number or number == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return number


def choice(*names: str) -> Callable[[Any], str]:
    """A parser accepting one of ``names``."""
    def parse(value: Any) -> str:
        text = str(value)
        if text not in names:
            raise ValueError(f"choose one of {', '.join(names)}")
        return text
    return parse


LOG_LEVELS = ("debug", "info", "warning", "error")


# --------------------------------------------------------------------------- shared fields
# Settings every server here has, with one meaning and one help text.

def backlog_setting(default: int, why: str = "") -> Any:
    """The listen backlog."""
    return setting(default, "listen backlog" + (f"; {why}" if why else ""), parse=positive_int)


def keepalive_timeout_setting(default: float = 15.0) -> Any:
    """How long an idle keep-alive client connection is kept."""
    return setting(default, "seconds an idle keep-alive client connection is kept",
                   parse=seconds, metavar="SECONDS")


def header_timeout_setting(default: float = 10.0) -> Any:
    """How long a client has for a request head, and for each pause in a body."""
    return setting(default, "seconds a client has to send a whole request head (then 408), "
                   "and the longest pause within a body", parse=seconds, metavar="SECONDS")


def grace_setting(default: float = 10.0) -> Any:
    """How long a graceful stop waits for in-flight requests."""
    return setting(default, "seconds SIGTERM waits for in-flight requests", parse=seconds,
                   metavar="SECONDS")


def log_level_setting(default: str = "info") -> Any:
    """The logging level."""
    return setting(default, "logging level: " + ", ".join(LOG_LEVELS), parse=choice(*LOG_LEVELS))
