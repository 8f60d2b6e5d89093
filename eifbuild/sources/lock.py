"""eif.lock: pins for sources their recipe leaves unpinned, recorded on first use.

```toml
version = 1

[sources."aws-nitro-cli-1.5.0".kernel.aarch64]
url = "https://…"
size = 12345
sha256 = "…"

[images."registry.example/app:v1"]      # an [app] oci registry tag, resolved on first use
digest = "sha256:…"                     # what the tag pointed to: an index or a manifest
manifests = { x86_64 = "sha256:…" }     # the platform manifest each arch of eif.toml takes
```

Builds apply these pins (:meth:`Lock.apply`, :meth:`Lock.image`) and refuse an unpinned source or
image tag without an entry. Files without ``[images]`` (older eifbuild) read as before.
This module is the file's model; ``eifbuild lock`` (check every source is pinned somewhere, record
the missing pins on trust) is :mod:`eifbuild.plan.locking`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..util.fsutil import atomic_write
from ..util.tomlfile import read_toml
from ..util.tomltable import TomlTables
from .recipe import Pins

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..arch import Arch
    from .recipe import Recipe, Source

LOCK_VERSION: Final = 1
LOCK_COMMAND: Final = "eifbuild lock --trust-on-first-use"
_ORIGIN_KEYS: Final = ("url", "apt", "version", "path")
_ENTRY_KEYS: Final = (*_ORIGIN_KEYS, "size", "sha256")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_IMAGE_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_HEADER: Final = (
    "# Pins recorded by `eifbuild lock --trust-on-first-use` for sources whose recipe has none.\n"
    "# Check this file in: builds refuse an unpinned source that has no entry here.\n"
)

EntryKey = tuple[str, str, "Arch | None"]  # recipe name, source name, arch


@dataclass(frozen=True)
class ImageEntry:
    """A registry tag pinned on first use: the digest it named, and each arch's platform manifest."""

    digest: str
    manifests: Mapping[Arch, str]


@dataclass(frozen=True)
class LockEntry:
    origin: Mapping[str, str]  # {"url": …}, {"apt": …, "version": …} or {"path": …}
    size: int
    sha256: str


def origin_of(source: Source) -> dict[str, str]:
    if source.url:
        return {"url": source.url}
    if source.apt and source.version:
        return {"apt": source.apt, "version": source.version}
    return {"path": str(source.path)}


def _entry_key(source: Source) -> EntryKey:
    return (source.recipe, source.name, source.arch)


class Lock:
    """The entries of one lock file (an absent file is an empty lock)."""

    def __init__(
        self,
        path: str | Path,
        entries: dict[EntryKey, LockEntry] | None = None,
        images: dict[str, ImageEntry] | None = None,
    ) -> None:
        self.path = Path(path)
        self.entries: dict[EntryKey, LockEntry] = dict(entries or {})
        self.images: dict[str, ImageEntry] = dict(images or {})

    @classmethod
    def load(cls, path: str | Path) -> Lock:
        path = Path(path)
        if not path.exists():
            return cls(path)
        data = read_toml(path, "lock file")
        return cls(path, _parse(data, path), _parse_images(data.get("images", {}), TomlTables(path)))

    def image(self, ref: str) -> ImageEntry | None:
        """The pin recorded for the image tag ``ref`` (as eif.toml spells it), if any."""
        return self.images.get(ref)

    def record_image(self, ref: str, entry: ImageEntry) -> None:
        self.images[ref] = entry

    def keep_images(self, refs: set[str]) -> None:
        """Forget the pins of image tags the project no longer names."""
        for ref in set(self.images) - refs:
            del self.images[ref]

    def entry(self, source: Source) -> LockEntry | None:
        return self.entries.get(_entry_key(source))

    def current_entry(self, source: Source) -> LockEntry | None:
        """The entry of ``source`` when it was recorded for the source's current origin."""
        entry = self.entry(source)
        return entry if entry is not None and dict(entry.origin) == origin_of(source) else None

    def record(self, source: Source, size: int, sha256: str) -> None:
        self.entries[_entry_key(source)] = LockEntry(origin_of(source), size, sha256)

    def drop_stale(self, recipe: Recipe) -> None:
        """Forget ``recipe``'s entries of sources that are gone or that the recipe pins itself now."""
        unpinned = {_entry_key(s) for s in recipe.all_sources() if not s.pins.pinned}
        for key in [k for k in self.entries if k[0] == recipe.name and k not in unpinned]:
            del self.entries[key]

    def apply_all(self, sources: Mapping[str, Source]) -> dict[str, Source]:
        """:meth:`apply` to each of ``sources`` (by name, as :meth:`Recipe.for_arch` gives them)."""
        return {name: self.apply(source) for name, source in sources.items()}

    def apply(self, source: Source) -> Source:
        """``source`` with the lock's pin when the recipe has none (unchanged otherwise)."""
        if source.pins.pinned:
            return source
        entry = self.entry(source)
        if entry is None:
            return source
        if dict(entry.origin) != origin_of(source):
            was = ", ".join(f"{k} {v!r}" for k, v in entry.origin.items())
            msg = (
                f"the pin of {source.label} was recorded for {was}, but the recipe now says "
                f"{source.origin!r}: run '{LOCK_COMMAND} {source.recipe_path}' to pin the new one"
            )
            raise ConfigError(msg, path=self.path)
        return source.with_pins(Pins(sha256=entry.sha256), pinned_by=str(self.path))

    def dumps(self) -> str:
        lines = [_HEADER, f"version = {LOCK_VERSION}\n"]
        for (recipe, name, arch), entry in sorted(self.entries.items(), key=lambda kv: _sort_key(kv[0])):
            table = ".".join(_toml_key(k) for k in ("sources", recipe, name, *([arch] if arch else [])))
            lines.append(f"\n[{table}]\n")
            for key in _ORIGIN_KEYS:
                if key in entry.origin:
                    lines.append(f"{key} = {json.dumps(entry.origin[key], ensure_ascii=False)}\n")
            lines.append(f"size = {entry.size}\n")
            lines.append(f'sha256 = "{entry.sha256}"\n')
        for ref, image in sorted(self.images.items()):
            lines.append(f"\n[images.{_toml_key(ref)}]\n")
            lines.append(f'digest = "{image.digest}"\n')
            arches = ", ".join(f'{arch} = "{digest}"' for arch, digest in sorted(image.manifests.items()))
            lines.append(f"manifests = {{ {arches} }}\n")
        return "".join(lines)

    def save(self) -> None:
        with atomic_write(self.path) as fh:
            fh.write(self.dumps().encode())


def _sort_key(key: EntryKey) -> tuple[str, str, str]:
    return (key[0], key[1], key[2] or "")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _parse(data: Mapping[str, Any], path: Path) -> dict[EntryKey, LockEntry]:
    check = TomlTables(path)
    if data.get("version") != LOCK_VERSION:
        msg = f"unsupported lock file version {data.get('version')!r} (expected {LOCK_VERSION})"
        raise ConfigError(msg, path=path, key="version")
    check.only_keys(sorted(data), ("version", "sources", "images"), "", style="bare")
    entries: dict[EntryKey, LockEntry] = {}
    for recipe, by_name in check.table(data.get("sources", {}), "sources", say_type=False).items():
        for name, value in check.table(by_name, f"sources.{recipe}", say_type=False).items():
            where = f"sources.{recipe}.{name}"
            table = check.table(value, where, say_type=False)
            if "sha256" in table:
                entries[(recipe, name, None)] = _parse_entry(table, check, where)
                continue
            for arch_key, sub in table.items():
                sub_where = f"{where}.{arch_key}"
                arch = check.arch(arch_key, sub_where)
                entries[(recipe, name, arch)] = _parse_entry(
                    check.table(sub, sub_where, say_type=False), check, sub_where
                )
    return entries


def _parse_images(raw: Any, check: TomlTables) -> dict[str, ImageEntry]:
    images: dict[str, ImageEntry] = {}
    for ref, value in check.table(raw, "images", say_type=False).items():
        where = f"images.{_toml_key(ref)}"
        table = check.table(value, where, say_type=False)
        check.only_keys(table, ("digest", "manifests"), where, style="list", listed="expected")
        manifests: dict[Arch, str] = {}
        for arch_key, digest in check.table(table.get("manifests", {}), f"{where}.manifests").items():
            key = f"{where}.manifests.{arch_key}"
            manifests[check.arch(arch_key, key)] = _image_digest(digest, check, key)
        images[ref] = ImageEntry(_image_digest(table.get("digest"), check, f"{where}.digest"), manifests)
    return images


def _image_digest(value: Any, check: TomlTables, key: str) -> str:
    if not isinstance(value, str) or not _IMAGE_DIGEST.fullmatch(value):
        raise check.error(key, f"expected 'sha256:' and 64 hex digits, got {value!r}")
    return value


def _parse_entry(table: Mapping[str, Any], check: TomlTables, where: str) -> LockEntry:
    check.only_keys(table, _ENTRY_KEYS, where, style="list", listed="expected")
    sha256 = check.hex_digest(table.get("sha256"), f"{where}.sha256")
    size = check.count(table.get("size"), f"{where}.size", "expected a byte count")
    origin = {k: v for k, v in table.items() if k in _ORIGIN_KEYS}
    if not origin or not all(isinstance(v, str) for v in origin.values()):
        msg = "expected url, apt + version, or path (strings)"
        raise check.error(where, msg)
    return LockEntry(origin, size, sha256)
