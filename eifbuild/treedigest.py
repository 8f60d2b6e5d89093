"""A content digest of a directory tree that is cheap to recompute when nothing changed.

The digest covers what a ramdisk built from the tree depends on: every path, its type, permission
bits, content (sha256) or link target or device numbers, and which paths are hardlinks of each other.
It does not cover owners or times, which the cpio writer normalises anyway.

To stay cheap on a no-op, each file's content hash is cached against its stat fingerprint (size,
mtime_ns, ctime_ns, inode, device). ctime is part of it on purpose: an edit that keeps the size and
restores the mtime (``touch -r``) still moves the ctime, so we re-hash it where an mtime-only (or
doit-md5-on-mtime) check would not. When the fingerprints of the whole tree equal the last run's, the
previous digest is returned without opening the per-file cache at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .errors import ArchiveError
from .fsutil import atomic_write, hash_file

if TYPE_CHECKING:
    from pathlib import Path

CACHE_FORMAT: Final = 1


@dataclass(frozen=True)
class TreeDigest:
    digest: str
    files: int
    size: int
    rehashed: int  # how many files had to be read (0 on a no-op)


def _walk(root: str) -> list[tuple[str, os.stat_result]]:
    """Every entry below ``root`` but sockets as (relative path, lstat), sorted; symlinks are not followed."""
    found: list[tuple[str, os.stat_result]] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(os.path.join(root, rel) if rel else root) as it:
                for entry in it:
                    st = entry.stat(follow_symlinks=False)
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(path)
                    elif stat.S_ISSOCK(st.st_mode):
                        continue  # the cpio writer skips sockets too
                    found.append((path, st))
        except OSError as exc:
            msg = f"cannot read directory: {exc.strerror}"
            raise ArchiveError(msg, path=os.path.join(root, rel)) from None
    # Code point order of the (surrogate-escaped) names is canonical; paths are unique.
    found.sort(key=_path_of)
    return found


def _path_of(item: tuple[str, os.stat_result]) -> str:
    return item[0]


def _fingerprint(path: str, st: os.stat_result) -> str:
    return (
        f"{path}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n"
    )


def _load_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == CACHE_FORMAT else {}


def _files_cache(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.name + ".files")


def _manifest_line(
    path: str, st: os.stat_result, content: str, links: dict[tuple[int, int], str]
) -> tuple[str, str | None]:
    """One canonical line per entry; returns (line, new hardlink leader or None)."""
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return f"d {mode:o} {path}", None
    if stat.S_ISLNK(st.st_mode):
        return f"l {mode:o} {path} -> {content}", None
    if stat.S_ISREG(st.st_mode):
        ident = (st.st_dev, st.st_ino)
        leader = links.get(ident) if st.st_nlink > 1 else None
        if leader is not None:
            return f"h {mode:o} {path} => {leader}", None
        return f"f {mode:o} {st.st_size} {content} {path}", path if st.st_nlink > 1 else None
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else "p"
    return f"{kind} {mode:o} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} {path}", None


def tree_digest(root: Path, *, cache_path: Path | None = None) -> TreeDigest:
    """sha256 of the canonical manifest of ``root``; ``cache_path`` keeps fingerprints between runs."""
    if not root.is_dir():
        msg = "expected a directory"
        raise ArchiveError(msg, path=root)
    listing = _walk(str(root))
    fp_digest = hashlib.sha256(
        "".join(_fingerprint(p, st) for p, st in listing).encode("utf-8", "surrogateescape")
    )
    summary = _load_json(cache_path)
    size = sum(st.st_size for _, st in listing if stat.S_ISREG(st.st_mode))
    if summary.get("fingerprints") == fp_digest.hexdigest():
        return TreeDigest(summary["digest"], len(listing), size, 0)

    known: dict[str, list[Any]] = {}
    if cache_path is not None:
        known = _load_json(_files_cache(cache_path)).get("files", {})
    files: dict[str, list[Any]] = {}
    links: dict[tuple[int, int], str] = {}
    manifest = hashlib.sha256()
    rehashed = 0
    for path, st in listing:
        content = ""
        if stat.S_ISREG(st.st_mode):
            fingerprint = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
            old = known.get(path)
            if old is not None and old[:5] == fingerprint:
                content = old[5]
            else:
                content = _hash_member(root, path)
                rehashed += 1
            files[path] = [*fingerprint, content]
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(root / path)
        line, leader = _manifest_line(path, st, content, links)
        if leader is not None:
            links[(st.st_dev, st.st_ino)] = leader
        manifest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    digest = manifest.hexdigest()
    if cache_path is not None:
        with atomic_write(_files_cache(cache_path)) as fh:
            fh.write(json.dumps({"format": CACHE_FORMAT, "files": files}, separators=(",", ":")).encode())
        summary = {"format": CACHE_FORMAT, "fingerprints": fp_digest.hexdigest(), "digest": digest}
        with atomic_write(cache_path) as fh:  # written last: it vouches for the files cache
            fh.write(json.dumps(summary).encode())
    return TreeDigest(digest, len(listing), size, rehashed)


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
        with atomic_write(self.cache_path) as fh:
            fh.write(json.dumps({"format": CACHE_FORMAT, "files": known}).encode())
        return digest

    @staticmethod
    def path_id(path: Path) -> str:
        """A short stable name for a cache file about ``path`` on this machine."""
        return hashlib.sha256(os.fsencode(path.absolute())).hexdigest()[:32]
