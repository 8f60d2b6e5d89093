"""Small filesystem helpers shared by every writer: atomic outputs, streaming hashes, read-only trees."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol

from .background import Background

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

# 1 MiB reads keep hashing near memory bandwidth while holding memory constant.
CHUNK: Final = 1 << 20


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, mode: int = 0o644, big: bool = False
) -> Iterator[IO[bytes]]:
    """Yield a binary file that replaces ``path`` only if the block finishes without an exception.

    The temp file lives in the target directory (same filesystem, so the rename is atomic) and is
    removed on any BaseException, Ctrl-C included: a failed write never leaves a half-written output.

    ``big`` outputs (EIFs, ramdisks) unlink an existing ``path`` just before the rename: when a
    rename replaces a file, ext4 (auto_da_alloc) makes the renaming process start the writeback of
    the whole new file, about 1 s per GiB on the build machines. The price is a moment in which
    ``path`` does not exist; it never holds a partial file, and a failed write keeps the old one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, mode)
        if big and not os.path.isdir(target):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# What writing into a directory we may not write raises: a read-only mount, or no permission.
NOT_WRITABLE: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def not_writable(exc: OSError) -> bool:
    """True when ``exc`` says the place cannot be written (read-only mount, no permission)."""
    return exc.errno in NOT_WRITABLE


def write_if_writable(path: str | os.PathLike[str], data: bytes) -> bool:
    """Replace ``path`` with ``data`` (atomically) unless its directory cannot be written: for
    what only saves work later (fingerprints, stamps, gc roots), which a read-only store does
    without. Return whether it was written; other errors propagate."""
    try:
        with atomic_write(path) as fh:
            fh.write(data)
    except OSError as exc:
        if not_writable(exc):
            return False
        raise
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its directory, if missing) across processes.

    ``flock``: the kernel releases it when the holder dies, so a killed build never leaves it held.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def lock_if_free(path: Path) -> Iterator[bool]:
    """Hold ``path``'s exclusive lock for the block if no process holds it now; yield whether we do.

    A missing lock file counts as free (nobody can hold it) and is not created.
    """
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the block
    except FileNotFoundError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tree_size(path: Path) -> int:
    """Bytes in the regular files at or below ``path`` (0 when it is gone)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


class Readable(Protocol):
    """A binary stream to read from: files, ``io.BytesIO``, archive members, decompressors."""

    def read(self, size: int = -1, /) -> bytes: ...


class StreamHasher:
    """Running digests (one per algorithm) over one stream, plus its length.

    With ``threaded`` and more than one algorithm, every algorithm but the first hashes on a worker
    thread (hashlib releases the GIL for a chunk), so two digests of a big file cost about the time
    of the slower one; chunks handed to :meth:`update` must not be mutated afterwards (``bytes``),
    and the digests wait for the worker.
    """

    def __init__(self, algorithms: Iterable[str] = ("sha256",), *, threaded: bool = False) -> None:
        self.algorithms = tuple(sorted(set(algorithms)))
        self._threaded = threaded and len(self.algorithms) > 1
        self._worker: Background[bytes | bytearray | memoryview] | None = None
        self.reset()

    def reset(self) -> None:
        self.close()
        self._hashers = [hashlib.new(name) for name in self.algorithms]
        self.size = 0
        if self._threaded:
            self._worker = Background(self._update_rest, name="hash")

    def _update_rest(self, data: bytes | bytearray | memoryview) -> None:
        for hasher in self._hashers[1:]:
            hasher.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._worker is not None:
            self._worker.submit(data)
            self._hashers[0].update(data)
        else:
            for hasher in self._hashers:
                hasher.update(data)
        self.size += len(data)

    def close(self) -> None:
        """Stop the worker (if any) without raising; the digests then stay as they are."""
        self._finish(reraise=False)

    def _finish(self, *, reraise: bool = True) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.close(reraise=reraise)

    def hexdigest(self, algorithm: str = "sha256") -> str:
        self._finish()
        return self._hashers[self.algorithms.index(algorithm)].hexdigest()

    def hexdigests(self) -> dict[str, str]:
        self._finish()
        return {name: h.hexdigest() for name, h in zip(self.algorithms, self._hashers, strict=True)}


def copy_hashed(
    src: Readable,
    hasher: StreamHasher,
    out: IO[bytes] | None = None,
    *,
    on_chunk: Callable[[int], object] | None = None,
) -> int:
    """Feed everything left in ``src`` to ``hasher`` in CHUNK reads, writing it to ``out`` too if
    given (and telling ``on_chunk`` each chunk's length); return how many bytes were read."""
    size = 0
    while chunk := src.read(CHUNK):
        if out is not None:
            out.write(chunk)  # before hashing: a resumed download trusts hasher.size as the file's length
        hasher.update(chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
        size += len(chunk)
    return size


def hash_stream(stream: Readable, algorithm: str = "sha256") -> tuple[str, int]:
    """Return (hex digest, size) of everything left in ``stream``."""
    hasher = StreamHasher((algorithm,))
    copy_hashed(stream, hasher)
    return hasher.hexdigest(algorithm), hasher.size


# Digests of files this process wrote and hashed with :func:`remember_digests`, by (device, inode,
# size, mtime): a file's later hash_file (the store's scan of a step's outputs, the provenance of
# the published hard link) reuses them instead of reading the file again. ctime is not in the key
# (a hard link moves it); the files are ours, fresh, and not edited in place while we run.
_KNOWN: dict[tuple[int, int, int, int], dict[str, str]] = {}


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def remember_digests(path: str | os.PathLike[str], algorithms: Iterable[str]) -> dict[str, str]:
    """Hash the file at ``path`` in every algorithm from one read (two threads for two algorithms)
    and remember the digests for :func:`hash_file` in this process."""
    with open(path, "rb") as fh:
        hasher = StreamHasher(algorithms, threaded=True)
        try:
            copy_hashed(fh, hasher)
            digests = hasher.hexdigests()
        finally:
            hasher.close()
        _KNOWN[_identity(os.fstat(fh.fileno()))] = digests
    return digests


def hash_file(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    if _KNOWN:
        known = _KNOWN.get(_identity(os.stat(path)), {})
        if algorithm in known:
            return known[algorithm]
    with open(path, "rb") as fh:
        return hash_stream(fh, algorithm)[0]


def make_readonly(root: Path) -> None:
    """Remove write bits below and including ``root`` (keeps exec bits); symlinks are left alone."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o222)
    st = os.lstat(root)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(root, stat.S_IMODE(st.st_mode) & ~0o222)


def remove_tree(path: Path) -> None:
    """Delete a file or directory tree, including read-only store entries."""
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
    os.chmod(path, 0o700)
    shutil.rmtree(path)
