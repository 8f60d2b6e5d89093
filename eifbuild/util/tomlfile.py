"""Reading the project's TOML files (eif.toml, recipes, eif.lock) with one kind of error."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FileAccessError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    from pathlib import Path


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    """The document in ``text`` (read from ``path``); invalid TOML is a ConfigError naming the file."""
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"invalid TOML: {exc}"
        raise ConfigError(msg, path=path) from None
    return doc


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document in the file ``path``, a ``what`` (e.g. "recipe") for the error message."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read {what}: {exc.strerror}"
        raise FileAccessError(msg, path=path) from None
    except UnicodeDecodeError as exc:
        msg = f"invalid TOML: {exc}"
        raise ConfigError(msg, path=path) from None
    return parse_toml(text, path)
