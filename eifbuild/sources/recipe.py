"""Recipes: named, pinned sources per architecture, read from TOML.

```toml
[recipe]
name = "aws-nitro-cli-1.5.0"
description = "…"
[defaults]                      # free-form values for the build (e.g. which source is the kernel);
cmdline = "…"                   # [defaults.<arch>] overrides them per architecture
[sources.kernel.x86_64]         # sources.<name>.<arch> …
url = "https://…"
sha256 = "…"
[sources.init-c]                # … or sources.<name> when the same for every arch
url = "https://…"
mirrors = ["https://…"]
sha256 = "…"
```

A source has exactly one origin (``url`` or ``apt`` + ``version``, each + ``mirrors``, or ``path``), its
pins (``sha256``, ``hash`` (SRI), ``nar_hash`` (SRI of the unpacked tree's NAR)) and what to take
from it (``unpack``, ``strip``, ``member``). Validation errors name the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import unquote, urlsplit

from ..arch import ARCHES, Arch, parse_arch
from ..errors import ConfigError, did_you_mean
from ..store import Step, StoreEntry, TypedParams
from ..util.tomlfile import read_toml
from ..util.tomltable import TomlTables
from .nar import parse_sri, to_sri

if TYPE_CHECKING:
    from collections.abc import Mapping

SOURCE_KEYS: Final = (
    "url",
    "mirrors",
    "path",
    "apt",
    "version",
    "sha256",
    "hash",
    "nar_hash",
    "unpack",
    "strip",
    "member",
)
_TOP_KEYS: Final = ("recipe", "defaults", "sources")
_RECIPE_KEYS: Final = ("name", "description")
_ARCH_KEYS: Final = frozenset({"x86_64", "aarch64", "amd64", "arm64"})
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_RECIPE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_DEB_PACKAGE: Final = re.compile(r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?")
_DEB_VERSION: Final = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")


SOURCE_STEP_VERSION: Final = 1


@dataclass(frozen=True)
class SourceParams(TypedParams):
    """A ``source`` step (its inputs are the pins): the shape of the output — a ``tree`` (unpacked,
    or a local directory) or the one file ``filename``, maybe the archive ``member`` (``strip``
    leading path components)."""

    KIND: ClassVar[str] = "source"
    VERSION: ClassVar[int] = SOURCE_STEP_VERSION

    tree: bool
    filename: str | None
    member: str | None
    strip: int
    unpack: bool

    def to_json(self) -> dict[str, bool | int | str | None]:
        return {
            "tree": self.tree,
            "filename": self.filename,
            "member": self.member,
            "strip": self.strip,
            "unpack": self.unpack,
        }


_SAFE_FILENAME: Final = re.compile(r"[A-Za-z0-9._+~=-]+")


@dataclass(frozen=True)
class Pins:
    """What a source must hash to. Hex digests; ``sri`` is a sha384/sha512 pin of the fetched file."""

    sha256: str | None = None  # of the fetched file (of a local directory: of its NAR)
    sri: tuple[str, str] | None = None  # (algorithm, hex) of the fetched file
    nar_sha256: str | None = None  # of the NAR of the unpacked tree (after strip)

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.sri or self.nar_sha256)

    @property
    def file_algorithms(self) -> tuple[str, ...]:
        return ("sha256", self.sri[0]) if self.sri else ("sha256",)

    def identity(self) -> dict[str, str]:
        """Every pin, as the inputs of the source's store step."""
        found = {}
        if self.sha256:
            found["sha256"] = self.sha256
        if self.sri:
            found[self.sri[0]] = self.sri[1]
        if self.nar_sha256:
            found["nar-sha256"] = self.nar_sha256
        return found

    def expected(self, algorithm: str) -> str:
        """A pin in the notation the user wrote it in (hex for sha256, SRI otherwise)."""
        if algorithm == "sha256" and self.sha256:
            return self.sha256
        if algorithm == "nar" and self.nar_sha256:
            return to_sri(bytes.fromhex(self.nar_sha256))
        if self.sri and self.sri[0] == algorithm:
            return to_sri(bytes.fromhex(self.sri[1]), algorithm)
        raise KeyError(algorithm)


@dataclass(frozen=True)
class Source:
    """One pinned input: where it comes from, what it must hash to, and what to take from it."""

    name: str
    recipe: str
    recipe_path: Path
    arch: Arch | None = None
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    path: str | None = None  # as written; relative to the recipe's directory
    apt: str | None = None
    version: str | None = None
    pins: Pins = Pins()
    unpack: bool = False
    strip: int = 0
    member: str | None = None
    pinned_by: str = ""  # the lock file the pins came from, when not the recipe

    @property
    def label(self) -> str:
        """``recipe/name[.arch]``, for messages."""
        return f"{self.recipe}/{self.qualified_name}"

    @property
    def qualified_name(self) -> str:
        """``name`` or ``name.arch``: the source's place under [sources] in its recipe."""
        return self.name + (f".{self.arch}" if self.arch else "")

    @property
    def key(self) -> str:
        return f"sources.{self.qualified_name}"

    @property
    def origin(self) -> str:
        """The primary location: URL, ``apt:NAME=VERSION`` or the path as written."""
        if self.url:
            return self.url
        if self.apt:
            return f"apt:{self.apt}={self.version}"
        return str(self.path)

    @property
    def origins(self) -> tuple[str, ...]:
        """The primary location, then the mirrors (URLs of the same file; also for apt sources)."""
        return (self.origin, *self.mirrors) if self.url or self.apt else (self.origin,)

    @property
    def local_path(self) -> Path | None:
        if self.path is None:
            return None
        return (self.recipe_path.parent / self.path).resolve()

    @property
    def is_tree(self) -> bool:
        local = self.local_path
        return self.unpack or (local is not None and local.is_dir())

    @property
    def filename(self) -> str:
        """File name of the output when it is a single file."""
        if self.member:
            name = PurePosixPath(self.member).name
        elif self.url:
            name = unquote(PurePosixPath(urlsplit(self.url).path).name)
        elif self.apt:
            name = f"{self.apt}_{self.version}.deb".replace(":", "%3a")
        else:
            name = PurePosixPath(str(self.path)).name
        return name if _SAFE_FILENAME.fullmatch(name) and name not in {".", ".."} else "download"

    def aliases(self) -> list[str]:
        """Cache alias names of the pins other than sha256."""
        found = [f"{self.pins.sri[0]}-{self.pins.sri[1]}"] if self.pins.sri else []
        if self.pins.nar_sha256:
            found.append(f"nar-sha256-{self.pins.nar_sha256}-strip{self.strip}")
        return found

    def step(self) -> Step[SourceParams]:
        """The store step holding this source's output: keyed by its pins, never by its location."""
        tree = self.is_tree
        params = SourceParams(
            tree=tree,
            filename=None if tree else self.filename,
            member=self.member,
            strip=self.strip,
            unpack=self.unpack,
        )
        return Step(params, self.pins.identity())

    @staticmethod
    def output_path(entry: StoreEntry) -> Path:
        """Where a store entry of :meth:`step` keeps the source: the tree, or the file in it."""
        meta = entry.meta
        return entry.path if meta["tree"] else entry.path / str(meta["filename"])

    def with_pins(self, pins: Pins, pinned_by: str) -> Source:
        return dataclasses.replace(self, pins=pins, pinned_by=pinned_by)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: sources by name, then by arch (``None``: the same for every arch)."""

    name: str
    description: str
    path: Path
    sources: Mapping[str, Mapping[Arch | None, Source]]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def arches(self) -> tuple[Arch, ...]:
        """Arches this recipe can serve: those of its per-arch sources (all when it has none)."""
        named = {arch for by_arch in self.sources.values() for arch in by_arch if arch is not None}
        return tuple(a for a in ARCHES if a in named) if named else ARCHES

    def source(self, name: str, arch: Arch) -> Source:
        """The source ``name`` for ``arch``, with the recipe's own pins (a lock file may add some)."""
        by_arch = self.sources.get(name)
        if by_arch is None:
            hint = did_you_mean(name, self.sources)
            msg = f"recipe {self.name!r} has no source {name!r}{hint}"
            raise ConfigError(msg, path=self.path)
        found = by_arch.get(arch, by_arch.get(None))
        if found is None:
            have = ", ".join(str(a) for a in by_arch)
            msg = f"recipe {self.name!r} has no source {name!r} for {arch} (only for {have})"
            raise ConfigError(msg, path=self.path)
        return found

    def for_arch(self, arch: Arch) -> dict[str, Source]:
        """Every source available for ``arch``, by name."""
        return {
            name: self.source(name, arch)
            for name, by_arch in self.sources.items()
            if arch in by_arch or None in by_arch
        }

    def all_sources(self) -> list[Source]:
        """Each source once (a per-arch source once per arch)."""
        return [src for by_arch in self.sources.values() for src in by_arch.values()]

    def defaults_for(self, arch: Arch) -> dict[str, Any]:
        common = {k: v for k, v in self.defaults.items() if k not in _ARCH_KEYS}
        for key, value in self.defaults.items():
            if key in _ARCH_KEYS and parse_arch(key) == arch:
                common.update(value)
        return common


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file: a file that cannot be read is a :class:`FileAccessError`,
    every other problem a :class:`ConfigError` naming file and key."""
    path = Path(path)
    return parse_recipe(read_toml(path, "recipe"), path)


def parse_recipe(data: Mapping[str, Any], path: Path) -> Recipe:
    check = TomlTables(path)
    check.only_keys(data, _TOP_KEYS, "", style="hint+list")
    head = check.optional_table(data.get("recipe"), "recipe", required=True)
    check.only_keys(head, _RECIPE_KEYS, "recipe", style="hint+list")
    name = check.required_string(head, "name", "recipe")
    if not _RECIPE_NAME.fullmatch(name):
        msg = f"recipe name {name!r} may use only letters, digits and . _ + -"
        raise ConfigError(msg, path=path, key="recipe.name")
    description = check.optional_string(head, "description", "recipe") or ""
    defaults = check.optional_table(data.get("defaults"), "defaults")
    for key, value in defaults.items():
        if key in _ARCH_KEYS:
            check.optional_table(value, f"defaults.{key}")
    sources: dict[str, dict[Arch | None, Source]] = {}
    for src_name, table in check.optional_table(data.get("sources"), "sources", required=True).items():
        if not _NAME.fullmatch(src_name):
            msg = "source names may use only letters, digits, '-' and '_'"
            raise ConfigError(msg, path=path, key=f"sources.{src_name}")
        sources[src_name] = _parse_by_arch(table, name, src_name, path)
    return Recipe(name, description, path, sources, defaults)


def _parse_by_arch(table: Any, recipe: str, name: str, path: Path) -> dict[Arch | None, Source]:
    key = f"sources.{name}"
    check = TomlTables(path)
    table = check.optional_table(table, key, required=True)
    arch_keys = [k for k in table if k in _ARCH_KEYS]
    if not arch_keys:
        return {None: parse_source(table, recipe=recipe, name=name, path=path, arch=None)}
    if len(arch_keys) != len(table):
        other = sorted(set(table) - set(arch_keys))
        msg = f"mixes per-arch tables ({', '.join(arch_keys)}) with source keys ({', '.join(other)})"
        raise ConfigError(msg, path=path, key=key)
    by_arch: dict[Arch | None, Source] = {}
    for arch_key, sub in table.items():
        arch = parse_arch(arch_key, where=f"{key}.{arch_key}")
        if arch in by_arch:
            msg = f"{arch} is given twice (as {arch_key} and under another name)"
            raise ConfigError(msg, path=path, key=f"{key}.{arch_key}")
        by_arch[arch] = parse_source(
            check.optional_table(sub, f"{key}.{arch_key}", required=True),
            recipe=recipe,
            name=name,
            path=path,
            arch=arch,
        )
    return by_arch


def parse_source(
    table: Mapping[str, Any], *, recipe: str, name: str, path: Path, arch: Arch | None
) -> Source:
    """One source table (already located at ``sources.<name>[.<arch>]``)."""
    where = f"sources.{name}" + (f".{arch}" if arch else "")
    prefix = where + "."
    check = TomlTables(path)
    check.only_keys(table, SOURCE_KEYS, where, style="hint+list")
    origins = [k for k in ("url", "path", "apt") if k in table]
    if len(origins) != 1:
        msg = "needs exactly one of url, path or apt" + (f" (got {', '.join(origins)})" if origins else "")
        raise ConfigError(msg, path=path, key=where)
    url = check.optional_string(table, "url", where)
    mirrors = check.string_list(table.get("mirrors", []), f"{prefix}mirrors")
    for i, u in enumerate((url, *mirrors) if url else mirrors):
        _check_url(u, path, f"{prefix}{'url' if url and i == 0 else 'mirrors'}")
    apt, version = check.optional_string(table, "apt", where), check.optional_string(table, "version", where)
    if mirrors and not (url or apt):
        msg = "mirrors need a url or an apt package (they are other locations of the same file)"
        raise ConfigError(msg, path=path, key=f"{prefix}mirrors")
    _check_apt(apt, version, path, prefix)
    unpack = check.boolean(table.get("unpack", False), f"{prefix}unpack")
    member = check.optional_string(table, "member", where)
    strip = check.count(table.get("strip", 0), f"{prefix}strip", "expected a non-negative integer")
    if unpack and member:
        msg = "unpack and member exclude each other (member takes one file out of the archive)"
        raise ConfigError(msg, path=path, key=f"{prefix}member")
    pins = _parse_pins(table, path, prefix)
    if strip and not (unpack or member or pins.nar_sha256):
        msg = "strip only applies with unpack, member or nar_hash"
        raise ConfigError(msg, path=path, key=f"{prefix}strip")
    return Source(
        name=name,
        recipe=recipe,
        recipe_path=path,
        arch=arch,
        url=url,
        mirrors=mirrors,
        path=check.optional_string(table, "path", where),
        apt=apt,
        version=version,
        pins=pins,
        unpack=unpack,
        strip=strip,
        member=member,
    )


def _parse_pins(table: Mapping[str, Any], path: Path, prefix: str) -> Pins:
    check, where = TomlTables(path), prefix.rstrip(".")
    sha256 = check.optional_string(table, "sha256", where)
    if sha256 is not None:
        sha256 = check.hex_digest(sha256, f"{prefix}sha256")
    sri = None
    hash_text = check.optional_string(table, "hash", where)
    if hash_text is not None:
        algorithm, digest = parse_sri(hash_text, where=f"{prefix}hash")
        if algorithm == "sha256":
            if sha256 is not None and sha256 != digest:
                msg = f"hash {hash_text!r} and sha256 {sha256!r} disagree"
                raise ConfigError(msg, path=path, key=f"{prefix}hash")
            sha256 = digest
        else:
            sri = (algorithm, digest)
    nar = check.optional_string(table, "nar_hash", where)
    nar_sha256 = parse_sri(nar, where=f"{prefix}nar_hash", algorithms=("sha256",))[1] if nar else None
    return Pins(sha256=sha256, sri=sri, nar_sha256=nar_sha256)


# -- checks of values --------------------------------------------------------------------------------
def _check_url(url: str, path: Path, key: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number is a ValueError here, not at download time
    except ValueError as exc:
        msg = f"not a valid URL ({exc}): {url!r}"
        raise ConfigError(msg, path=path, key=key) from None
    if parts.scheme not in {"https", "http", "file"} or not (parts.netloc or parts.scheme == "file"):
        msg = f"expected an https://, http:// or file:// URL, got {url!r}"
        raise ConfigError(msg, path=path, key=key)


def _check_apt(apt: str | None, version: str | None, path: Path, prefix: str) -> None:
    if apt is None:
        if version is not None:
            msg = "version only applies to apt sources"
            raise ConfigError(msg, path=path, key=f"{prefix}version")
        return
    if not _DEB_PACKAGE.fullmatch(apt):
        msg = f"{apt!r} is not a Debian package name"
        raise ConfigError(msg, path=path, key=f"{prefix}apt")
    if version is None:
        msg = "apt sources need the exact package version (see `apt-cache policy PACKAGE`)"
        raise ConfigError(msg, path=path, key=f"{prefix}version")
    if not _DEB_VERSION.fullmatch(version):
        msg = f"{version!r} is not a Debian package version"
        raise ConfigError(msg, path=path, key=f"{prefix}version")
