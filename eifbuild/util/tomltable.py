"""One validator for the tables of the project's TOML files (eif.toml, recipes and their
``[defaults.kernel_build]``, eif.lock): key checks with a did-you-mean, typed getters and the hex
digest rule. Every error is a :class:`ConfigError` naming the file and the dotted key.

The files' messages differ in their details (eif.toml names the type it got, a recipe lists the
keys it allows in its own order); the options keep each file's wording.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from ..arch import parse_arch
from ..errors import ConfigError, LocatedError, UsageError, did_you_mean

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping
    from pathlib import Path

    from ..arch import Arch

HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")

# How an unknown key is reported: "suggest" (eif.toml: a did-you-mean, else the sorted keys),
# "hint+list" (recipes: a did-you-mean, then the keys), "list" (the keys), "bare" (nothing more).
UnknownStyle = Literal["suggest", "hint+list", "list", "bare"]


def type_name(value: Any) -> str:
    """``a string``, ``an integer``, …: what a TOML value is, for messages."""
    names = {str: "a string", int: "an integer", float: "a float", bool: "a boolean", list: "an array"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def join_key(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def unknown_key_message(key: str, allowed: Collection[str], style: UnknownStyle, listed: str) -> str:
    if style == "bare":
        return "unknown key"
    if style == "suggest":
        hint = did_you_mean(key, sorted(allowed))
        if hint:
            return f"unknown key; {hint[2:-1]}"  # " (did you mean 'x'?)" without its parentheses
        return f"unknown key; expected one of: {', '.join(sorted(allowed))}"
    hint = did_you_mean(key, allowed) if style == "hint+list" else ""
    return f"unknown key{hint}; {listed} {', '.join(allowed)}"


@dataclass(frozen=True)
class TomlTables:
    """Checks for the tables of one file (``path``); keys are full dotted keys."""

    path: Path

    def error(self, key: str | None, message: str) -> LocatedError:
        return ConfigError(message, path=self.path, key=key)

    def arch(self, name: str, key: str) -> Arch:
        """The architecture ``name`` names, where it is a key or value of this file (not an option)."""
        try:
            return parse_arch(name)
        except UsageError as exc:
            raise self.error(key, exc.reason) from None

    def only_keys(
        self,
        table: Iterable[str],
        allowed: Collection[str],
        prefix: str,
        *,
        style: UnknownStyle = "suggest",
        listed: str = "expected one of",
    ) -> None:
        """Refuse the first key of ``table`` (a table or its keys) not in ``allowed``; ``prefix`` is
        the table's dotted key."""
        for key in table:
            if key not in allowed:
                raise self.error(join_key(prefix, key), unknown_key_message(key, allowed, style, listed))

    def table(self, value: Any, key: str, *, say_type: bool = True) -> dict[str, Any]:
        if not isinstance(value, dict):
            got = f", got {type_name(value)}" if say_type else ""
            raise self.error(key, f"expected a table{got}")
        return value

    def optional_table(self, value: Any, key: str, *, required: bool = False) -> dict[str, Any]:
        """A table that may be absent (``{}``); ``required`` makes absence "missing table"."""
        if value is None and not required:
            return {}
        if value is None:
            raise self.error(key, "missing table")
        return self.table(value, key, say_type=False)

    def string(self, value: Any, key: str, *, allow_empty: bool = False, say_type: bool = True) -> str:
        if not isinstance(value, str) and say_type:
            raise self.error(key, f"expected a string, got {type_name(value)}")
        if not isinstance(value, str) or (not allow_empty and not value):
            raise self.error(key, "expected a non-empty string")
        return value

    def optional_string(self, table: Mapping[str, Any], name: str, prefix: str) -> str | None:
        """``table[name]`` as a non-empty string, None when absent."""
        value = table.get(name)
        return None if value is None else self.string(value, join_key(prefix, name), say_type=False)

    def required_string(self, table: Mapping[str, Any], name: str, prefix: str) -> str:
        """``table[name]`` as a non-empty string; "missing" when absent."""
        if table.get(name) is None:
            raise self.error(join_key(prefix, name), "missing")
        return self.string(table[name], join_key(prefix, name), say_type=False)

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        """An array of strings (empty ones allowed), naming the element that is not one."""
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of strings, got {type_name(value)}")
        return tuple(self.string(v, f"{key}[{i}]", allow_empty=True) for i, v in enumerate(value))

    def string_list(self, value: Any, key: str) -> tuple[str, ...]:
        """A list of non-empty strings, as one check ("expected a list of strings")."""
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, "expected a list of strings")
        return tuple(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, "expected true or false")
        return value

    def count(self, value: Any, key: str, message: str) -> int:
        """A non-negative integer (booleans are not)."""
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.error(key, message)
        return value

    def hex_digest(self, value: Any, key: str) -> str:
        """64 hex digits, either case, as lowercase (the one notation of a sha256 everywhere)."""
        if not isinstance(value, str) or not HEX64.fullmatch(value):
            raise self.error(key, f"expected 64 hex digits, got {value!r}")
        return value.lower()


@dataclass(frozen=True)
class DocTables(TomlTables):
    """The same checks on a JSON document read from outside (a docker-save ``manifest.json``, an
    image config): each error is the one ``make(key, message)`` returns (e.g. an ArchiveError
    naming the archive and its member)."""

    make: Callable[[str | None, str], LocatedError]

    def error(self, key: str | None, message: str) -> LocatedError:
        return self.make(key, message)
