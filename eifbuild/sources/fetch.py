"""Pinned sources: fetch, verify, and publish into the store, where build steps find them by key.

:func:`fetch_source` turns a :class:`~eifbuild.sources.recipe.Source` into a store entry (Step
kind ``source``, keyed by the source's pins, so the same pinned bytes have the same key on every
machine):

1. a store hit returns at once: no network, no cache, no hashing;
2. otherwise the fetched file comes from the shared download cache (re-hashed), or is downloaded
   into it (mirrors in order; the hash is checked while streaming, a ``nar_hash`` on the archive's
   members) — nothing enters the cache or the store unless every pin matches. A ``path =`` source
   is always read where it is and checked against its pins (on a store hit too), never taken from
   the cache: a checkout that lacks the file must not build;
3. the entry holds the file itself, one ``member`` taken out of it, or the unpacked tree.

An unpinned source is refused with a message naming ``eifbuild lock --trust-on-first-use``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import log
from ..errors import ArchiveError, ConfigError, FetchError, FileAccessError, HashMismatch, ToolError
from ..store import Downloaded, Downloader, SourceCache, apt_download, download_checked
from ..util.bounded import INPUT_CAP, Capped, open_regular
from ..util.fsutil import StreamHasher, copy_hashed
from .archive import copy_tree, extract_member, nar_digest_of_archive, unpack, write_hashed
from .lock import LOCK_COMMAND
from .nar import to_sri

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from ..arch import Arch
    from ..store import Store, StoreEntry
    from .lock import Lock
    from .recipe import Recipe, Source, SourceParams

_FAILURES: Final = (FetchError, HashMismatch, ArchiveError, ToolError)


@dataclass(frozen=True)
class FetchedSource:
    """A verified source in the store.

    ``sha256``/``size`` describe what build steps consume: the file at ``path``, or for a tree
    (``is_tree``) the NAR serialisation of the directory at ``path``. ``fetched_sha256`` is the
    sha256 of what was downloaded (the archive or .deb when a member or tree was taken from it).
    """

    source: Source
    key: str
    path: Path
    sha256: str
    size: int
    is_tree: bool
    fetched_sha256: str


@dataclass(frozen=True)
class Blob:
    """A verified fetched file: in the download cache, or a local ``path =`` source."""

    path: Path
    sha256: str
    size: int


def unpinned_error(source: Source, lock: Lock | None = None) -> ConfigError:
    where = lock.path if lock is not None else "the lock file"
    msg = (
        f"source {source.name!r}{f' for {source.arch}' if source.arch else ''} has no pin "
        f"(sha256, hash or nar_hash) in its recipe or in {where}: "
        f"run '{LOCK_COMMAND} {source.recipe_path}' to fetch it once and record its sha256"
    )
    return ConfigError(msg, path=source.recipe_path, key=source.key)


def fetch_source(
    source: Source,
    *,
    store: Store,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
) -> FetchedSource:
    """The store entry of a pinned source, fetching and verifying it first if the store lacks it."""
    if not source.pins.pinned:
        raise unpinned_error(source)
    step = source.step()
    entry = store.get(step.key)
    local = source.local_path
    if entry is not None and local is not None and not local.is_dir():  # the project's file, not the store
        _local_blob(source, local, tmp_dir=(cache or SourceCache()).root / "partial")
    if entry is None:
        log.step(f"fetch {source.label}")
        entry = store.realize(step, functools.partial(_materialise, source, cache, downloader))
    return fetched_from_entry(source, entry)


def fetch_recipe(
    recipe: Recipe,
    arch: Arch,
    *,
    store: Store,
    lock: Lock | None = None,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
) -> dict[str, FetchedSource]:
    """Every source of ``recipe`` for ``arch`` (pins from ``lock`` where the recipe has none)."""
    sources = lock.apply_all(recipe.for_arch(arch)) if lock is not None else recipe.for_arch(arch)
    fetched = _fetch_pinned(list(sources.values()), lock, store=store, cache=cache, downloader=downloader)
    return dict(zip(sources, fetched, strict=True))


def fetch_all(
    recipe: Recipe,
    *,
    store: Store,
    arches: Iterable[Arch] | None = None,
    lock: Lock | None = None,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
) -> list[FetchedSource]:
    """Every source of ``recipe`` (each per-arch one for each of ``arches``; default: all arches).

    Unpinned sources are refused before anything is downloaded.
    """
    wanted = set(arches) if arches is not None else None
    sources = [
        lock.apply(s) if lock is not None else s
        for s in recipe.all_sources()
        if s.arch is None or wanted is None or s.arch in wanted
    ]
    return _fetch_pinned(sources, lock, store=store, cache=cache, downloader=downloader)


def _fetch_pinned(
    sources: list[Source],
    lock: Lock | None,
    *,
    store: Store,
    cache: SourceCache | None,
    downloader: Downloader | None,
) -> list[FetchedSource]:
    """Fetch ``sources`` in order, refusing them all if one is unpinned (before any download)."""
    unpinned = [s for s in sources if not s.pins.pinned]
    if unpinned:
        raise unpinned_error(unpinned[0], lock)
    downloader = downloader or Downloader()
    return [fetch_source(s, store=store, cache=cache, downloader=downloader) for s in sources]


def fetched_from_entry(source: Source, entry: StoreEntry) -> FetchedSource:
    meta = entry.meta
    return FetchedSource(
        source=source,
        key=entry.key,
        path=source.output_path(entry),
        sha256=str(meta["sha256"]),
        size=int(meta["size"]),
        is_tree=bool(meta["tree"]),
        fetched_sha256=str(meta["fetched_sha256"]),
    )


# -- building the store entry ----------------------------------------------------------------------
def _materialise(
    source: Source,
    cache: SourceCache | None,
    downloader: Downloader | None,
    params: SourceParams,
    out: Path,
) -> dict[str, Any]:
    """The output of a ``source`` step, shaped as ``params`` say (``source`` gives only where to get
    it from; whatever comes from there is checked against the pins in the step's inputs)."""
    meta: dict[str, Any] = {"origin": source.origin, "source": source.label}
    local = source.local_path
    if local is not None and local.is_dir():
        if params.unpack or params.member:
            msg = f"{local} is a directory; unpack and member apply to archives"
            raise ConfigError(msg, path=source.recipe_path, key=source.key)
        if not (source.pins.nar_sha256 or source.pins.sha256):
            msg = f"{local} is a directory: pin it with nar_hash (or sha256 = `nix-hash --type sha256 DIR`)"
            raise ConfigError(msg, path=source.recipe_path, key=source.key)
        nar = copy_tree(local, out)
        _check_tree(source, nar.sha256, what=str(local))
        return {**meta, "tree": True, "sha256": nar.sha256, "size": nar.size, "fetched_sha256": nar.sha256}
    blob = obtain(source, cache=cache or SourceCache(), downloader=downloader or Downloader())
    if params.unpack:
        nar = unpack(blob.path, out, strip=params.strip)
        _check_tree(source, nar.sha256, what=f"{source.origin} (unpacked)")
        return {**meta, "tree": True, "sha256": nar.sha256, "size": nar.size, "fetched_sha256": blob.sha256}
    if params.filename is None:  # pragma: no cover - only trees lack a file name, handled above
        msg = f"{source.label}: a single-file source step without a file name"
        raise ConfigError(msg, path=source.recipe_path, key=source.key)
    dest = out / params.filename
    if params.member:
        sha256, size = extract_member(blob.path, params.member, dest, strip=params.strip)
    else:
        with open(blob.path, "rb") as fin:
            sha256, size = write_hashed(fin, dest)
        if sha256 != blob.sha256:
            msg = f"cached file {blob.path} changed while it was copied (expected {blob.sha256})"
            raise FetchError(msg)
    return {
        **meta,
        "tree": False,
        "filename": dest.name,
        "sha256": sha256,
        "size": size,
        "fetched_sha256": blob.sha256,
    }


def _check_tree(source: Source, nar_sha256: str, *, what: str) -> None:
    """A tree's NAR hash against ``nar_hash`` (or, for a local directory, ``sha256``)."""
    pins = source.pins
    expected = pins.nar_sha256 or (pins.sha256 if source.local_path and not source.unpack else None)
    if expected and expected != nar_sha256:
        if pins.nar_sha256:
            shown, actual = pins.expected("nar"), to_sri(bytes.fromhex(nar_sha256))
        else:
            shown, actual = expected, nar_sha256
        msg = f"{what} (NAR hash of the tree)"
        raise HashMismatch(msg, expected=shown, actual=actual)


# -- the verified download -------------------------------------------------------------------------
def obtain(
    source: Source,
    *,
    cache: SourceCache,
    downloader: Downloader,
    trust_on_first_use: bool = False,
) -> Blob:
    """The source's fetched file, verified against every pin; from the cache, else downloaded.

    With ``trust_on_first_use`` an unpinned source is accepted as it comes (``eifbuild lock``).
    """
    if not source.pins.pinned and not trust_on_first_use:
        raise unpinned_error(source)
    local = source.local_path
    if local is not None:  # never from the cache: a checkout that lacks the file must not build
        return _local_blob(source, local, tmp_dir=cache.root / "partial")
    blob = _from_cache(source, cache)
    if blob is not None:
        return blob
    name = _download_name(source)
    with cache.lock(name):
        blob = _from_cache(source, cache)  # another process may have fetched it while we waited
        if blob is not None:
            return blob
        return _download(source, cache, downloader, name)


def _missing_path(source: Source, local: Path) -> FileAccessError:
    return FileAccessError(f"no such file or directory (the path of source {source.label})", path=local)


def _local_blob(source: Source, local: Path, *, tmp_dir: Path) -> Blob:
    """A ``path =`` source's file, read where it is and checked against its pins."""
    hashers = StreamHasher(source.pins.file_algorithms)
    if not local.exists():
        raise _missing_path(source, local)
    try:
        with open_regular(local, what=f"the path of source {source.label}") as fh:  # never a FIFO
            copy_hashed(Capped(fh, INPUT_CAP.value(), lambda n: _too_big(local, n)), hashers)
    except FileNotFoundError:
        raise _missing_path(source, local) from None
    except OSError as exc:
        msg = f"cannot read: {exc.strerror}"
        raise FileAccessError(msg, path=local) from None
    _check_file(source, local, hashers.hexdigests(), what=str(local), tmp_dir=tmp_dir)
    return Blob(local, hashers.hexdigest("sha256"), hashers.size)


def _too_big(local: Path, limit: int) -> FileAccessError:
    return FileAccessError(f"more than {limit} bytes (the limit {INPUT_CAP.env} raises)", path=local)


def _download_name(source: Source) -> str:
    """Name of the download's lock and partial file: its strongest pin, else its first location."""
    pins = source.pins.identity()
    if pins:
        kind, digest = next(iter(pins.items()))
        return f"{kind}-{digest}"
    return "url-" + hashlib.sha256(source.origin.encode()).hexdigest()


def _from_cache(source: Source, cache: SourceCache) -> Blob | None:
    pins = source.pins
    candidates = [pins.sha256] if pins.sha256 else [cache.resolve_alias(a) for a in source.aliases()]
    for sha256 in candidates:
        if sha256 is None or not cache.has(sha256):
            continue
        path = cache.blob(sha256)
        hashers = StreamHasher(pins.file_algorithms)
        with open(path, "rb") as fh:
            copy_hashed(fh, hashers)
        digests = hashers.hexdigests()
        if digests["sha256"] != sha256:
            log.warn(
                f"cached download {path} is corrupt (its sha256 is {digests['sha256']}); fetching it again"
            )
            cache.evict(sha256)
            continue
        try:
            _check_file(source, path, digests, what=str(path), tmp_dir=cache.root / "partial")
        except HashMismatch:
            continue  # an alias of another source's pins: fetch what this one wants
        return Blob(path, sha256, hashers.size)
    return None


def _download(source: Source, cache: SourceCache, downloader: Downloader, name: str) -> Blob:
    failures: list[Exception] = []
    for origin in source.origins:
        what = origin
        try:
            got = download_checked(
                functools.partial(_download_origin, source, origin, cache, downloader, name),
                functools.partial(_check_download, source, what, cache.root / "partial"),
                what=origin,
            )
        except _FAILURES as exc:
            if isinstance(exc, ToolError):
                cache.discard(name)  # apt-get failed, or the bytes could not be checked: start afresh
            failures.append(exc)
            if origin != source.origins[-1]:
                log.warn(f"{exc}; trying the next mirror")
            continue
        path = cache.publish(got.path, got.sha256)
        for alias in source.aliases():
            cache.add_alias(alias, got.sha256)
        return Blob(path, got.sha256, got.size)
    if len(failures) == 1:
        raise failures[0]
    msg = f"every location of {source.label} failed: " + "; ".join(str(f) for f in failures)
    raise FetchError(msg)


def _download_origin(
    source: Source, origin: str, cache: SourceCache, downloader: Downloader, name: str
) -> Downloaded:
    part = cache.partial(name)
    algorithms = source.pins.file_algorithms
    if source.apt is not None and source.version is not None and origin == source.origin:
        deb = apt_download(source.apt, source.version, cache.scratch(name))
        hashers = StreamHasher(algorithms)
        with open(deb, "rb") as fh:
            copy_hashed(fh, hashers)
        deb.replace(part)
        return Downloaded(part, hashers.hexdigests(), hashers.size, resumed=False)
    return downloader.download(origin, part, algorithms)


def _check_download(source: Source, what: str, tmp_dir: Path, got: Downloaded) -> None:
    _check_file(source, got.path, got.digests, what=what, tmp_dir=tmp_dir)


def _check_file(source: Source, path: Path, digests: dict[str, str], *, what: str, tmp_dir: Path) -> None:
    pins = source.pins
    for algorithm in pins.file_algorithms:
        pinned = pins.sha256 if algorithm == "sha256" else (pins.sri[1] if pins.sri else None)
        if pinned and pinned != digests[algorithm]:
            got = digests[algorithm]
            actual = got if algorithm == "sha256" else to_sri(bytes.fromhex(got), algorithm)
            raise HashMismatch(what, expected=pins.expected(algorithm), actual=actual)
    if pins.nar_sha256:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        nar = nar_digest_of_archive(path, strip=source.strip, tmp_dir=tmp_dir)
        if nar.sha256 != pins.nar_sha256:
            msg = f"{what} (NAR hash)"
            raise HashMismatch(msg, expected=pins.expected("nar"), actual=nar.sri)
