"""Reading the project's TOML files (eif.toml, recipes, eif.lock) with one kind of error."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError, InputError
from .bounded import MAX_DEPTH, check_toml_depth, read_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from pathlib import Path

MAX_TOML: Final = 16 << 20  # an eif.toml, recipe or eif.lock: kilobytes; more is not one


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """The document in ``text`` (read from ``path``); invalid TOML, or arrays and inline tables nested
    deeper than MAX_DEPTH, is a ConfigError naming the file."""
    try:
        check_toml_depth(text)
        doc: dict[str, Any] = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        msg = f"invalid TOML: {exc}"
        raise ConfigError(msg, path=path) from None
    except RecursionError:
        msg = f"invalid TOML: nested deeper than {MAX_DEPTH} levels"
        raise ConfigError(msg, path=path) from None
    return doc


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document in the file ``path`` (a regular file of at most MAX_TOML bytes), a ``what``
    (e.g. "recipe") for the error message."""
    try:
        text = read_regular(path, limit=MAX_TOML, what=what).decode("utf-8")
    except InputError as exc:
        raise ConfigError(exc.reason, path=path) from None
    except UnicodeDecodeError as exc:
        msg = f"invalid TOML: {exc}"
        raise ConfigError(msg, path=path) from None
    return parse_toml(text, path)
