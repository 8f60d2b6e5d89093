"""eif.lock: pins for sources their recipe leaves unpinned, recorded on first use.

```toml
version = 1

[sources."aws-nitro-cli-1.5.0".kernel.aarch64]
url = "https://…"
size = 12345
sha256 = "…"
```

Builds apply these pins (:meth:`Lock.apply`) and refuse an unpinned source without an entry.
:func:`lock_sources` (``eifbuild lock``) checks that every source is pinned somewhere and, only
with ``trust_on_first_use``, downloads the missing ones and records their sha256.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from .. import log
from ..arch import parse_arch
from ..build.config import LOCK_NAME
from ..errors import ConfigError
from ..util.fsutil import atomic_write
from ..util.tomlfile import read_toml
from .recipe import LOCK_COMMAND, Pins, Recipe, Source, load_recipe

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..arch import Arch
    from .download import Downloader, SourceCache

LOCK_VERSION: Final = 1
DEFAULT_LOCK_FILE: Final = LOCK_NAME
_ORIGIN_KEYS: Final = ("url", "apt", "version", "path")
_ENTRY_KEYS: Final = (*_ORIGIN_KEYS, "size", "sha256")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_HEADER: Final = (
    "# Pins recorded by `eifbuild lock --trust-on-first-use` for sources whose recipe has none.\n"
    "# Check this file in: builds refuse an unpinned source that has no entry here.\n"
)

EntryKey = tuple[str, str, "Arch | None"]  # recipe name, source name, arch


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

    def __init__(self, path: str | Path, entries: dict[EntryKey, LockEntry] | None = None) -> None:
        self.path = Path(path)
        self.entries: dict[EntryKey, LockEntry] = dict(entries or {})

    @classmethod
    def load(cls, path: str | Path) -> Lock:
        path = Path(path)
        if not path.exists():
            return cls(path)
        return cls(path, _parse(read_toml(path, "lock file"), path))

    def entry(self, source: Source) -> LockEntry | None:
        return self.entries.get(_entry_key(source))

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
        return "".join(lines)

    def save(self) -> None:
        with atomic_write(self.path) as fh:
            fh.write(self.dumps().encode())


def _sort_key(key: EntryKey) -> tuple[str, str, str]:
    return (key[0], key[1], key[2] or "")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _parse(data: Mapping[str, Any], path: Path) -> dict[EntryKey, LockEntry]:
    if data.get("version") != LOCK_VERSION:
        msg = f"unsupported lock file version {data.get('version')!r} (expected {LOCK_VERSION})"
        raise ConfigError(msg, path=path, key="version")
    unknown = sorted(set(data) - {"version", "sources"})
    if unknown:
        msg = "unknown key"
        raise ConfigError(msg, path=path, key=unknown[0])
    entries: dict[EntryKey, LockEntry] = {}
    for recipe, by_name in _table(data.get("sources", {}), path, "sources").items():
        for name, value in _table(by_name, path, f"sources.{recipe}").items():
            where = f"sources.{recipe}.{name}"
            table = _table(value, path, where)
            if "sha256" in table:
                entries[(recipe, name, None)] = _parse_entry(table, path, where)
                continue
            for arch_key, sub in table.items():
                arch = parse_arch(arch_key, where=f"{where}.{arch_key}")
                sub_where = f"{where}.{arch_key}"
                entries[(recipe, name, arch)] = _parse_entry(_table(sub, path, sub_where), path, sub_where)
    return entries


def _table(value: Any, path: Path, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        msg = "expected a table"
        raise ConfigError(msg, path=path, key=key)
    return value


def _parse_entry(table: Mapping[str, Any], path: Path, where: str) -> LockEntry:
    for key in table:
        if key not in _ENTRY_KEYS:
            msg = f"unknown key; expected {', '.join(_ENTRY_KEYS)}"
            raise ConfigError(msg, path=path, key=f"{where}.{key}")
    sha256, size = table.get("sha256"), table.get("size")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        msg = "expected 64 lowercase hex digits"
        raise ConfigError(msg, path=path, key=f"{where}.sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        msg = "expected a byte count"
        raise ConfigError(msg, path=path, key=f"{where}.size")
    origin = {k: v for k, v in table.items() if k in _ORIGIN_KEYS}
    if not origin or not all(isinstance(v, str) for v in origin.values()):
        msg = "expected url, apt + version, or path (strings)"
        raise ConfigError(msg, path=path, key=where)
    return LockEntry(origin, size, sha256)


# -- eifbuild lock -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockResult:
    """What ``lock`` found for one source: pinned by its recipe, already locked, or newly locked."""

    source: Source
    status: Literal["pinned", "locked", "new"]
    sha256: str | None = None
    size: int | None = None


def lock_sources(
    recipes: Iterable[Recipe | str | Path],
    lock_path: str | Path,
    *,
    trust_on_first_use: bool = False,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
) -> list[LockResult]:
    """Make sure every source of ``recipes`` is pinned, by its recipe or by the lock file.

    Sources with a lock entry for their current location are kept; entries of these recipes'
    sources that no longer exist or are pinned by their recipe now are dropped. Missing pins are an
    error unless ``trust_on_first_use``: then each such source is downloaded once (into the shared
    cache) and its sha256 and size recorded. The lock file is written only when it changed.
    """
    lock = Lock.load(lock_path)
    before = lock.dumps()
    loaded = [r if isinstance(r, Recipe) else load_recipe(r) for r in recipes]
    results: list[LockResult | Source] = []  # a Source: still to be locked
    for recipe in loaded:
        unpinned = {_entry_key(s) for s in recipe.all_sources() if not s.pins.pinned}
        for key in [k for k in lock.entries if k[0] == recipe.name and k not in unpinned]:
            del lock.entries[key]
        for source in recipe.all_sources():
            entry = lock.entry(source)
            if source.pins.pinned:
                results.append(LockResult(source, "pinned"))
            elif entry is not None and dict(entry.origin) == origin_of(source):
                results.append(LockResult(source, "locked", entry.sha256, entry.size))
            else:
                results.append(source)
    missing = [r for r in results if isinstance(r, Source)]
    if missing and not trust_on_first_use:
        names = ", ".join(s.label for s in missing)
        paths = " ".join(sorted({str(s.recipe_path) for s in missing}))
        msg = (
            f"{len(missing)} source(s) have no pin and no entry in {lock.path}: {names}; "
            f"run '{LOCK_COMMAND} {paths}' to download them once and record their sha256"
        )
        raise ConfigError(msg)
    from .download import Downloader, SourceCache  # noqa: PLC0415 - network code only when locking

    cache = cache or SourceCache()
    downloader = downloader or Downloader()
    done = [r if isinstance(r, LockResult) else _trust(r, lock, cache, downloader) for r in results]
    if lock.dumps() != before or (missing and not lock.path.exists()):
        lock.save()
    return done


def _trust(source: Source, lock: Lock, cache: SourceCache, downloader: Downloader) -> LockResult:
    local = source.local_path
    if local is not None and local.is_dir():  # a directory's sha256 pin is its NAR hash
        from .nar import nar_digest_of_path  # noqa: PLC0415

        nar = nar_digest_of_path(local)
        sha256, size = nar.sha256, nar.size
    else:
        from .fetch import obtain  # noqa: PLC0415

        blob = obtain(source, cache=cache, downloader=downloader, trust_on_first_use=True)
        sha256, size = blob.sha256, blob.size
    lock.entries[_entry_key(source)] = LockEntry(origin_of(source), size, sha256)
    log.step(f"locked {source.label}: sha256 {sha256} ({size} bytes)")
    return LockResult(source, "new", sha256, size)
