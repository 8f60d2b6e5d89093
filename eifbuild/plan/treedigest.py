"""A content digest of a directory tree that is cheap to recompute when nothing changed.

The digest covers what a ramdisk built from the tree depends on: every path, its type, permission
bits, content (sha256) or link target or device numbers, and which paths are hardlinks of each other.
It does not cover owners or times, which the cpio writer normalises anyway.

To stay cheap on a no-op, each file's content hash is cached against its stat fingerprint (size,
mtime_ns, ctime_ns, inode, device). ctime is part of it on purpose: an edit that keeps the size and
restores the mtime (``touch -r``) still moves the ctime, so we re-hash it where an mtime-only (or
doit-md5-on-mtime) check would not. When the fingerprints of the whole tree equal the last run's, the
previous digest is returned without opening the per-file cache at all. The caches are only
caches: a store that cannot be written (read-only) goes without them.

A no-op's only work is that stat walk (one lstat per entry, ~2.7 µs each here in Python, against
~1.8 µs from C), so on Linux a big tree's fingerprint is taken by two processes: a forked child
lstats every other entry (the walk order is the same in both, from the directories' listings and
their entries' d_type) while this process lstats the rest. The fingerprint is defined on those two
halves, so a single walk gives the same value. Only when it differs from the last run's is the tree
walked again, in this process, for the listing that is digested (and fingerprinted: the summary
always vouches for exactly what was digested).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from stat import S_ISREG, S_ISSOCK
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ..errors import ArchiveError
from ..util.fsutil import hash_file, write_if_writable

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

CACHE_FORMAT: Final = 1  # the per-file cache (path -> fingerprint and sha256)
SUMMARY_FORMAT: Final = 3  # the whole-tree summary (fingerprint of the listing -> digest)
PARALLEL_FROM: Final = 5_000  # entries (in the last run) from which a second process helps
_RECORD: Final = struct.Struct("<8Q")  # the fields of _Stat
_U64: Final = (1 << 64) - 1


class _Stat(NamedTuple):
    """The lstat fields the digest and the fingerprint use."""

    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    nlink: int
    rdev: int


@dataclass(frozen=True)
class TreeDigest:
    digest: str
    files: int
    size: int
    rehashed: int  # how many files had to be read (0 on a no-op)


@dataclass(frozen=True)
class _Listing:
    """Everything below a root but sockets, in walk order: paths and their packed _Stat records."""

    paths: list[str]
    records: bytes

    index: list[int]  # each path's position among all entries in walk order (sockets included)

    def fingerprint(self) -> str:
        """sha256 over the digests of the two halves (even and odd positions) of the listing."""
        halves: list[tuple[list[str], list[bytes]]] = [([], []), ([], [])]
        size = _RECORD.size
        for i, (path, at) in enumerate(zip(self.paths, self.index, strict=True)):
            paths, records = halves[at & 1]
            paths.append(path)
            records.append(self.records[i * size : (i + 1) * size])
        return _combine(_half_digest(paths, b"".join(records)) for paths, records in halves)

    def sorted(self) -> list[tuple[str, _Stat]]:
        """(path, stat) in code point order of the (surrogate-escaped) names; paths are unique."""
        stats = map(_Stat._make, _RECORD.iter_unpack(self.records))
        return sorted(zip(self.paths, stats, strict=True), key=_path_of)


def _half_digest(paths: list[str], records: bytes) -> bytes:
    digest = hashlib.sha256(len(paths).to_bytes(8, "little"))
    digest.update(records)
    digest.update("\0".join(paths).encode("utf-8", "surrogateescape"))
    return digest.digest()


def _combine(halves: Iterable[bytes]) -> str:
    return hashlib.sha256(b"".join(halves)).hexdigest()


def _walk(root: str, part: int | None = None) -> _Listing:
    """Walk ``root`` with one lstat per entry; symlinks are not followed.

    This is all a no-op run does with the tree, so it is kept lean: each entry leaves its path and a
    fixed-size binary record of its stat fields, no Python object per entry. The walk order depends
    only on the directories' contents (and their entries' d_type), and any change there moves a
    directory's mtime, which is in its record. With ``part`` (0 or 1) only the entries at even or
    odd positions are lstat'd and listed: the half one process of a parallel walk takes.
    """
    paths: list[str] = []
    records: list[bytes] = []
    index: list[int] = []
    pack, add, record, at = _RECORD.pack, paths.append, records.append, index.append
    pending = [""]
    position = -1
    while pending:
        rel = pending.pop()
        prefix = f"{rel}/" if rel else ""
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                for entry in it:
                    position += 1
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(prefix + entry.name)
                    if part is not None and position & 1 != part:
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if S_ISSOCK(st.st_mode):
                        continue  # the cpio writer skips sockets too
                    add(prefix + entry.name)
                    at(position)
                    try:
                        record(
                            pack(
                                st.st_mode,
                                st.st_size,
                                st.st_mtime_ns,
                                st.st_ctime_ns,
                                st.st_ino,
                                st.st_dev,
                                st.st_nlink,
                                st.st_rdev,
                            )
                        )
                    except struct.error:  # a time before 1970 or after 2554
                        record(_wrapped(st))
        except OSError as exc:
            msg = f"cannot read directory: {exc.strerror}"
            raise ArchiveError(msg, path=os.path.join(root, rel)) from None
    return _Listing(paths, b"".join(records), index)


def _parallel_fingerprint(root: str) -> str | None:
    """The listing's fingerprint from two processes (see the module's docstring); None when the
    child fails (an unreadable directory: the caller's own walk reports it)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: lstat the odd half, send its digest, exit without any cleanup
        status = 1
        try:
            os.close(read_end)
            listing = _walk(root, part=1)
            os.write(write_end, _half_digest(listing.paths, listing.records))  # 32 bytes: one write
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        mine = _walk(root, part=0)
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            theirs = pipe.read()
        _, status = os.waitpid(pid, 0)
    if status != 0 or len(theirs) != hashlib.sha256().digest_size:
        return None
    return _combine((_half_digest(mine.paths, mine.records), theirs))


def _parallel(summary: dict[str, Any]) -> bool:
    """Whether to fork for the fingerprint: Linux, a big tree last time, and no other thread (a fork
    copies only this one: a lock another thread holds would stay held in the child)."""
    return (
        sys.platform == "linux"
        and summary.get("files", 0) >= PARALLEL_FROM
        and threading.active_count() == 1
    )


def _wrapped(st: os.stat_result) -> bytes:
    """The record of ``st`` with every field taken modulo 2**64 (still equal exactly when equal)."""
    fields = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    return _RECORD.pack(*(v & _U64 for v in (*fields, st.st_nlink, st.st_rdev)))


def _path_of(item: tuple[str, _Stat]) -> str:
    return item[0]


def _load_json(path: Path | None, version: int = CACHE_FORMAT) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == version else {}


def _files_cache(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".files")


def _manifest_line(
    path: str, st: _Stat, content: str, links: dict[tuple[int, int], str]
) -> tuple[str, str | None]:
    """One canonical line per entry; returns (line, new hardlink leader or None)."""
    mode = stat.S_IMODE(st.mode)
    if stat.S_ISDIR(st.mode):
        return f"d {mode:o} {path}", None
    if stat.S_ISLNK(st.mode):
        return f"l {mode:o} {path} -> {content}", None
    if stat.S_ISREG(st.mode):
        ident = (st.dev, st.ino)
        leader = links.get(ident) if st.nlink > 1 else None
        if leader is not None:
            return f"h {mode:o} {path} => {leader}", None
        return f"f {mode:o} {st.size} {content} {path}", path if st.nlink > 1 else None
    kind = "c" if stat.S_ISCHR(st.mode) else "b" if stat.S_ISBLK(st.mode) else "p"
    return f"{kind} {mode:o} {os.major(st.rdev)}:{os.minor(st.rdev)} {path}", None


def tree_digest(root: Path, *, cache_path: Path | None = None) -> TreeDigest:
    """sha256 of the canonical manifest of ``root``; ``cache_path`` keeps fingerprints between runs."""
    if not root.is_dir():
        msg = "expected a directory"
        raise ArchiveError(msg, path=root)
    summary = _load_json(cache_path, SUMMARY_FORMAT)
    listing = None
    fingerprint = _parallel_fingerprint(str(root)) if _parallel(summary) else None
    if fingerprint is None:
        listing = _walk(str(root))
        fingerprint = listing.fingerprint()
    if summary.get("fingerprints") == fingerprint:
        return TreeDigest(summary["digest"], summary["files"], summary["size"], 0)
    if listing is None:  # changed: walk again here, so the summary vouches for what is digested
        listing = _walk(str(root))
        fingerprint = listing.fingerprint()
    result = _digest(root, listing.sorted(), cache_path)
    if cache_path is not None:
        summary = {
            "format": SUMMARY_FORMAT,
            "fingerprints": fingerprint,
            "digest": result.digest,
            "files": result.files,
            "size": result.size,
        }
        write_if_writable(cache_path, json.dumps(summary).encode())  # last: it vouches for the files cache
    return result


def _digest(root: Path, listing: list[tuple[str, _Stat]], cache_path: Path | None) -> TreeDigest:
    """Hash the manifest of the sorted ``listing``, reading only files the per-file cache lacks."""
    known: dict[str, list[Any]] = {}
    if cache_path is not None:
        known = _load_json(_files_cache(cache_path)).get("files", {})
    files: dict[str, list[Any]] = {}
    links: dict[tuple[int, int], str] = {}
    manifest = hashlib.sha256()
    rehashed = size = 0
    for path, st in listing:
        content = ""
        if S_ISREG(st.mode):
            size += st.size
            fingerprint = [st.size, st.mtime_ns, st.ctime_ns, st.ino, st.dev]
            old = known.get(path)
            if old is not None and old[:5] == fingerprint:
                content = old[5]
            else:
                content = _hash_member(root, path)
                rehashed += 1
            files[path] = [*fingerprint, content]
        elif stat.S_ISLNK(st.mode):
            content = os.readlink(root / path)
        line, leader = _manifest_line(path, st, content, links)
        if leader is not None:
            links[(st.dev, st.ino)] = leader
        manifest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    if cache_path is not None:
        text = json.dumps({"format": CACHE_FORMAT, "files": files}, separators=(",", ":"))
        write_if_writable(_files_cache(cache_path), text.encode())
    return TreeDigest(manifest.hexdigest(), len(listing), size, rehashed)


def _hash_member(root: Path, path: str) -> str:
    try:
        return hash_file(root / path)
    except OSError as exc:
        msg = f"cannot read file: {exc.strerror}"
        raise ArchiveError(msg, path=root / path) from None


class FileDigests:
    """sha256 of single project files, cached against their stat fingerprint in one small JSON file."""

    def __init__(self, cache_path: Path) -> None:
        self.cache_path = cache_path
        self._known: dict[str, list[Any]] | None = None

    def _cache(self) -> dict[str, list[Any]]:
        if self._known is None:
            self._known = _load_json(self.cache_path).get("files", {})
        return self._known

    def digest(self, path: Path) -> str:
        absolute = str(path.absolute())
        try:
            st = os.stat(absolute)
        except OSError as exc:
            msg = f"cannot read file: {exc.strerror}"
            raise ArchiveError(msg, path=path) from None
        fingerprint = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
        known = self._cache()
        old = known.get(absolute)
        if old is not None and old[:5] == fingerprint:
            return str(old[5])
        digest = _hash_member(path.parent, path.name)
        known[absolute] = [*fingerprint, digest]
        write_if_writable(self.cache_path, json.dumps({"format": CACHE_FORMAT, "files": known}).encode())
        return digest

    def tree_cache(self, root: Path) -> Path:
        """Where :func:`tree_digest` keeps the fingerprints of the tree at ``root`` (next to ours)."""
        return self.cache_path.parent / f"tree-{self.path_id(root)}.json"

    @staticmethod
    def path_id(path: Path) -> str:
        """A short stable name for a cache file about ``path`` on this machine."""
        return hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:32]
