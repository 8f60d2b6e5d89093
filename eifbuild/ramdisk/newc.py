"""Canonical newc ("070701") cpio: the entry model and a streaming writer (the reader is
:mod:`eifbuild.ramdisk.reader`).

The writer turns a list of :class:`Entry` records into exactly the bytes GNU cpio 2.13 writes for
the same tree after normalisation (every mtime set to ``mtime``, modes as the entries say)::

    cd T && find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z \\
         | cpio -o -H newc -R +0:+0 --reproducible --null

on ext4 or tmpfs. Nothing comes from the host at write time except file contents: the order, inode
numbers, link counts, owners and times are functions of the entry list alone. The rules:

- entries are sorted bytewise by their UTF-8 path (a parent sorts before its children); there is no
  ``.`` entry and no ``./`` prefix; every parent directory must itself be an entry;
- uid = gid = 0, dev = 0:0, rdev = 0:0 except for char/block devices, mtime = ``mtime`` for every
  entry, check = 0; names are NUL-terminated and padded so header+name is a multiple of 4, data is
  padded to 4 bytes;
- nlink: a directory has 2 + the number of its subdirectories; anything else has the number of
  entries in its hard-link group (1 when not hard-linked), never the host's count;
- inode numbers start at 0 and are handed out in sorted path order, one per inode: all links of
  a hard-link group share the number given when its first link (in sorted order) is reached;
- hard links to a regular file are *deferred* (GNU ``add_link_defer``): the first n-1 links of a
  group are held back, and when the n-th (last in sorted order) link is reached, the held-back
  links are written in reverse sorted order with size 0, followed by the last link carrying the
  data. Hard links to other kinds (symlinks, devices, fifos) are written in place, each with its
  own copy of the data (a symlink's target);
- the archive ends with ``TRAILER!!!`` (ino 0, mode 0, nlink 1, mtime 0) and is zero-padded to a
  multiple of 512 bytes (GNU's block size), which also keeps concatenated archives 4-byte aligned.

Compression ``gzip`` wraps that stream in one deterministic gzip member (no name, mtime 0, OS byte
255, level 6); ``align`` zero-pads the final output. Kernels skip zero padding between initramfs
archives, but an *uncompressed* archive is only recognised at a 4-byte aligned offset, so every
ramdisk of an image with a compressed one must be padded to 4 (:func:`eif_alignment`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, Union, get_args

from .. import log
from ..errors import ArchiveError, FileAccessError, UsageError
from ..repro import pinned_epoch
from ..util.background import Background
from ..util.fsutil import CHUNK, atomic_write
from ._sink import GzipSink, HashingSink
from .reader import HEADER_LEN, MAX_NAME, TRAILER, Readable

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ._sink import Writable

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]
Compression = Literal["none", "gzip"]
# Content of a regular file: bytes, a host path opened at write time, or an opener returning a
# binary stream (e.g. a slice of a decompressed OCI layer) that the writer reads and closes.
FileContent = Union[bytes, str, "os.PathLike[str]", Callable[[], "Readable"]]


KINDS: Final = frozenset(get_args(Kind))
COMPRESSIONS: Final[tuple[Compression, ...]] = get_args(Compression)  # "none" first: the default
BLOCK: Final = 512
GZIP_LEVEL: Final = 6
MAX_FIELD: Final = 0xFFFFFFFF

_TYPE_BITS: Final[dict[str, int]] = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "char": stat.S_IFCHR,
    "block": stat.S_IFBLK,
    "fifo": stat.S_IFIFO,
}


def _path_error(path: str) -> str | None:
    """Why ``path`` is not a canonical archive path, or None when it is."""
    if not path or "\0" in path:
        return "archive path is empty or contains a NUL byte"
    wrapped = f"/{path}/"
    if path[0] == "/" or "/../" in wrapped:
        return "archive path escapes the archive root: expected a relative path without '..'"
    if "//" in wrapped or "/./" in wrapped:
        return "archive path is not normalised: expected 'a/b' without empty or '.' components"
    if len(path) * 4 < MAX_NAME and path.isascii():
        return None
    try:
        length = len(path.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return "archive path is not encodable as bytes"
    return None if length < MAX_NAME else f"archive path is {length} bytes long: the limit is {MAX_NAME - 1}"


def check_path(path: str) -> None:
    """Raise ArchiveError unless ``path`` is relative, normalised and NUL-free."""
    if (msg := _path_error(path)) is not None:
        raise ArchiveError(msg, member=path)


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member, independent of any host file's metadata.

    - ``path``: archive path, '/'-separated, relative, no '.'/'..'/empty components (str; bytes that
      are not UTF-8 are carried as surrogate escapes, as ``os.fsdecode`` does);
    - ``kind``: file, dir, symlink, hardlink, char, block or fifo;
    - ``mode``: permission bits incl. setuid/setgid/sticky (``0o7777``); the type bits come from
      ``kind``. Symlinks are always written 0777 (Linux has no other), hard links take the mode of
      the entry they link to;
    - ``size``/``source``: for files, the exact content length and where it comes from (see
      :data:`FileContent`); the writer fails if the source yields a different length;
    - ``target``: a symlink's target; ``link_to``: the archive path a hard link points to (an entry of
      another kind, which then owns mode and content);
    - ``rdev_major``/``rdev_minor``: device number of char/block nodes.
    """

    path: str
    kind: Kind
    mode: int = 0o644
    size: int = 0
    source: FileContent | None = None
    target: str = ""
    link_to: str = ""
    rdev_major: int = 0
    rdev_minor: int = 0

    def __post_init__(self) -> None:
        check_path(self.path)
        if (msg := self._field_error()) is not None:
            raise ArchiveError(msg, member=self.path)

    def _field_error(self) -> str | None:
        if self.kind not in KINDS:
            return f"unknown entry kind {self.kind!r}: expected one of {', '.join(sorted(KINDS))}"
        if not 0 <= self.mode <= 0o7777:
            return f"mode {self.mode:#o} out of range: expected permission bits within 0o7777"
        check = _KIND_CHECKS.get(self.kind)
        return None if check is None else check(self)

    @classmethod
    def file(cls, path: str, source: FileContent, *, mode: int = 0o644, size: int | None = None) -> Entry:
        """A regular file; ``size`` defaults to len(bytes) or the host file's size."""
        if size is None:
            if isinstance(source, bytes):
                size = len(source)
            elif isinstance(source, (str, os.PathLike)):
                size = _host_size(source, path)
            else:
                msg = "a streamed file entry needs its size declared"
                raise ArchiveError(msg, member=path)
        return cls(path, "file", mode, size, source)

    @classmethod
    def directory(cls, path: str, *, mode: int = 0o755) -> Entry:
        return cls(path, "dir", mode)

    @classmethod
    def symlink(cls, path: str, target: str) -> Entry:
        return cls(path, "symlink", 0o777, target=target)

    @classmethod
    def hardlink(cls, path: str, link_to: str) -> Entry:
        return cls(path, "hardlink", 0, link_to=link_to)

    @classmethod
    def device(
        cls, path: str, kind: Literal["char", "block"], major: int, minor: int, *, mode: int = 0o644
    ) -> Entry:
        return cls(path, kind, mode, rdev_major=major, rdev_minor=minor)

    @classmethod
    def fifo(cls, path: str, *, mode: int = 0o644) -> Entry:
        return cls(path, "fifo", mode)


def _file_error(e: Entry) -> str | None:
    if e.source is None:
        return "file entry without a content source"
    if not 0 <= e.size <= MAX_FIELD:
        return f"size {e.size} out of range for newc: expected 0..{MAX_FIELD}"
    if isinstance(e.source, bytes) and len(e.source) != e.size:
        return f"declared size {e.size} but the content has {len(e.source)} bytes"
    return None


def _symlink_error(e: Entry) -> str | None:
    return None if e.target and "\0" not in e.target else "symlink entry needs a non-empty, NUL-free target"


def _hardlink_error(e: Entry) -> str | None:
    if (msg := _path_error(e.link_to)) is not None:
        return f"hard link target {e.link_to!r}: {msg}"
    return "hard link points to itself" if e.link_to == e.path else None


def _device_error(e: Entry) -> str | None:
    if 0 <= e.rdev_major <= MAX_FIELD and 0 <= e.rdev_minor <= MAX_FIELD:
        return None
    return f"device number {e.rdev_major}:{e.rdev_minor} out of range"


_KIND_CHECKS: Final[dict[str, Callable[[Entry], str | None]]] = {
    "file": _file_error,
    "symlink": _symlink_error,
    "hardlink": _hardlink_error,
    "char": _device_error,
    "block": _device_error,
}


def _host_size(source: str | os.PathLike[str], member: str) -> int:
    try:
        st = os.stat(source)
    except OSError as exc:
        msg = f"cannot read source file: {exc.strerror}"
        raise ArchiveError(msg, path=os.fspath(source), member=member) from None
    if not stat.S_ISREG(st.st_mode):
        msg = "source is not a regular file"
        raise ArchiveError(msg, path=os.fspath(source), member=member)
    return st.st_size


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What was written: sha256 and size of the output bytes (after compression and padding)."""

    sha256: str
    size: int
    entries: int


def eif_alignment(compressions: Iterable[Compression]) -> int:
    """The padding every ramdisk of one EIF needs: 4 once any of them is compressed, else 1.

    The kernel finds compressed archives by magic at any offset but an uncompressed newc archive only
    at a 4-byte aligned offset (measured, see docs): after an unaligned gzip stream it stops unpacking.
    """
    return 4 if any(c != "none" for c in compressions) else 1


# ---------------------------------------------------------------------------------------------------
# planning: order, inode numbers, link counts


class _Record(NamedTuple):
    name: bytes
    entry: Entry  # the entry that owns mode and content (a hard link's target)
    ino: int
    nlink: int
    with_data: bool


def _resolve_links(by_path: dict[str, Entry]) -> dict[str, str]:
    """Map every hard link to the path of the non-link entry its chain ends at."""
    owner: dict[str, str] = {}
    for path, entry in by_path.items():
        if entry.kind != "hardlink":
            continue
        seen = {path}
        cur = entry
        while cur.kind == "hardlink":
            nxt = by_path.get(cur.link_to)
            if nxt is None:
                msg = f"hard link to {cur.link_to!r}, which is not in the archive"
                raise ArchiveError(msg, member=cur.path)
            if nxt.path in seen:
                msg = "hard links form a cycle"
                raise ArchiveError(msg, member=path)
            seen.add(nxt.path)
            cur = nxt
        if cur.kind == "dir":
            msg = f"hard link to directory {cur.path!r}"
            raise ArchiveError(msg, member=path)
        owner[path] = cur.path
    return owner


def _check_tree(ordered: Sequence[Entry], by_path: dict[str, Entry]) -> None:
    for entry in ordered:
        parent, sep, _ = entry.path.rpartition("/")
        if not sep:
            continue
        found = by_path.get(parent)
        if found is None:
            msg = f"parent directory {parent!r} is not in the archive"
            raise ArchiveError(msg, member=entry.path)
        if found.kind != "dir":
            msg = f"parent {parent!r} is a {found.kind}, expected a directory"
            raise ArchiveError(msg, member=entry.path)


def plan(entries: Iterable[Entry]) -> list[_Record]:
    """The records in GNU cpio's write order (see the module docstring for the rules)."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        if by_path.setdefault(entry.path, entry) is not entry:
            msg = "duplicate archive path"
            raise ArchiveError(msg, member=entry.path)
    # Paths are unique, so the tuples never compare their entries.
    ordered = sorted((e.path.encode("utf-8", "surrogateescape"), e) for e in by_path.values())
    _check_tree([e for _, e in ordered], by_path)
    owner = _resolve_links(by_path)
    group_size: dict[str, int] = {}
    for key in owner.values():
        group_size[key] = group_size.get(key, 1) + 1
    subdirs: dict[str, int] = {}
    for _, entry in ordered:
        if entry.kind == "dir":
            parent = entry.path.rpartition("/")[0]
            subdirs[parent] = subdirs.get(parent, 0) + 1

    inos: dict[str, int] = {}
    seen: dict[str, int] = {}
    held: dict[str, list[_Record]] = {}
    records: list[_Record] = []
    for name, entry in ordered:
        key = owner.get(entry.path, entry.path)
        real = by_path[key]
        ino = inos.setdefault(key, len(inos))
        if real.kind == "dir":
            records.append(_Record(name, real, ino, 2 + subdirs.get(entry.path, 0), False))
            continue
        nlink = group_size.get(key, 1)
        if real.kind != "file" or nlink == 1:
            records.append(_Record(name, real, ino, nlink, True))
            continue
        seen[key] = seen.get(key, 0) + 1
        if seen[key] < nlink:
            held.setdefault(key, []).append(_Record(name, real, ino, nlink, False))
            continue
        records.extend(reversed(held.pop(key)))
        records.append(_Record(name, real, ino, nlink, True))
    return records


# ---------------------------------------------------------------------------------------------------
# the writer


class _OutputFailed(Exception):
    """Writing the archive failed; deliberately not an OSError, so that the ``except OSError`` of
    the readers around a content copy never mistake a full disk for an unreadable input."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Writer:
    """Buffers headers and small contents into large writes to the (hashing, gzip) sink."""

    def __init__(self, sink: Background[bytes | bytearray | memoryview], mtime: int) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.offset = 0
        # mtime is the same in every header but the trailer's.
        self.mtime = b"%08X" % mtime

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.offset += len(data)
        if len(data) >= CHUNK:
            self.flush()
            self._submit(data)
            return
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self._submit(self.buf)
            self.buf = bytearray()

    def _submit(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self.sink.submit(data)  # re-raises what the background writer hit
        except OSError as exc:
            raise _OutputFailed(exc) from None

    def header(
        self, name: bytes, *, mode: int, ino: int, nlink: int, size: int, rdev: tuple[int, int]
    ) -> bytes:
        namesize = len(name) + 1
        return b"".join(
            (
                b"070701%08X%08X0000000000000000%08X" % (ino, mode, nlink),
                self.mtime,
                b"%08X0000000000000000%08X%08X%08X00000000" % (size, rdev[0], rdev[1], namesize),
                name,
                b"\0" * (1 + (-(HEADER_LEN + namesize) % 4)),
            )
        )

    def record(self, rec: _Record) -> int:
        """Write one header and its data; return the number of file-content bytes copied."""
        entry = rec.entry
        kind = entry.kind
        mode = 0o120777 if kind == "symlink" else _TYPE_BITS[kind] | entry.mode
        rdev = (entry.rdev_major, entry.rdev_minor) if kind in ("char", "block") else (0, 0)
        size = 0
        payload = b""
        if rec.with_data and kind == "symlink":
            payload = entry.target.encode("utf-8", "surrogateescape")
            size = len(payload)
        elif rec.with_data and kind == "file":
            size = entry.size
        head = self.header(rec.name, mode=mode, ino=rec.ino, nlink=rec.nlink, size=size, rdev=rdev)
        if not size or payload:
            self.write(head + payload + b"\0" * (-size % 4))
            return 0
        if size < CHUNK and isinstance(entry.source, (str, os.PathLike)):
            data = _read_small_file(entry, os.fspath(entry.source))  # the common case, kept lean
            self.offset += len(head) + size + (-size % 4)
            self.buf += head
            self.buf += data
            self.buf += b"\0" * (-size % 4)
            if len(self.buf) >= CHUNK:
                self.flush()
            return size
        self.write(head)
        _copy_content(entry, self)
        self.write(b"\0" * (-size % 4))
        return size

    def trailer(self) -> None:
        name = TRAILER.encode()
        self.mtime = b"00000000"
        self.write(self.header(name, mode=0, ino=0, nlink=1, size=0, rdev=(0, 0)))
        self.write(b"\0" * (-self.offset % BLOCK))
        self.flush()


def _copy_content(entry: Entry, out: _Writer) -> None:
    source = entry.source
    if isinstance(source, bytes):
        out.write(source)
        return
    if isinstance(source, (str, os.PathLike)):
        _copy_host_file(entry, os.fspath(source), out)
        return
    assert source is not None  # noqa: S101 - Entry validation guarantees it
    try:
        stream = source()
    except OSError as exc:
        msg = f"cannot open content: {exc}"
        raise ArchiveError(msg, member=entry.path) from exc
    try:
        _copy_stream(entry, stream.read, out, where=None)
    except OSError as exc:
        msg = f"cannot read content: {exc}"
        raise ArchiveError(msg, member=entry.path) from exc
    finally:
        stream.close()


def _copy_host_file(entry: Entry, path: str, out: _Writer) -> None:
    fd = _open_host_file(entry, path)
    try:
        # A regular file's read() is only short at end of file: asking for one byte more than
        # expected both copies a small file and proves its size in a single system call.
        _copy_stream(entry, lambda n: os.read(fd, n), out, where=path, short_is_eof=True)
    except OSError as exc:
        raise _unreadable(exc, entry, path) from None
    finally:
        os.close(fd)


def _read_small_file(entry: Entry, path: str) -> bytes:
    """The whole content of a host file smaller than CHUNK, in one read (see _copy_host_file)."""
    fd = _open_host_file(entry, path)
    try:
        data = os.read(fd, entry.size + 1)
        while len(data) < entry.size and (more := os.read(fd, entry.size + 1 - len(data))):
            data += more
    except OSError as exc:
        raise _unreadable(exc, entry, path) from None
    finally:
        os.close(fd)
    if len(data) > entry.size:
        raise _too_long(entry, path)
    if len(data) < entry.size:
        raise _too_short(entry, len(data), path)
    return data


def _open_host_file(entry: Entry, path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _unreadable(exc, entry, path) from None


def _unreadable(exc: OSError, entry: Entry, path: str) -> ArchiveError:
    msg = f"cannot read source file: {exc.strerror}"
    return ArchiveError(msg, path=path, member=entry.path)


def _too_long(entry: Entry, where: str | None) -> ArchiveError:
    msg = f"content is longer than the expected {entry.size} bytes (changed while archiving?)"
    return ArchiveError(msg, path=where, member=entry.path)


def _too_short(entry: Entry, got: int, where: str | None) -> ArchiveError:
    msg = f"content is {got} bytes, expected {entry.size} (changed while archiving?)"
    return ArchiveError(msg, path=where, member=entry.path)


def _copy_stream(
    entry: Entry, read: Callable[[int], bytes], out: _Writer, where: str | None, *, short_is_eof: bool = False
) -> None:
    remaining = entry.size
    while True:
        want = remaining + 1 if remaining < CHUNK else CHUNK
        chunk = read(want)
        if len(chunk) > remaining:
            raise _too_long(entry, where)
        if not chunk and remaining:
            raise _too_short(entry, entry.size - remaining, where)
        out.write(chunk)
        remaining -= len(chunk)
        if not chunk or (short_is_eof and not remaining and len(chunk) < want):
            return


def _check_mtime(mtime: int) -> None:
    if not 0 <= mtime <= MAX_FIELD:
        msg = f"mtime {mtime} out of range for newc: expected 0..{MAX_FIELD} seconds since the epoch"
        raise UsageError(msg)


def write_cpio(
    entries: Iterable[Entry],
    out: Writable,
    *,
    mtime: int | None = None,
    compression: Compression = "none",
    align: int = 1,
) -> WriteResult:
    """Write the canonical newc archive of ``entries`` to ``out``, streaming contents (constant memory).

    ``mtime`` defaults to SOURCE_DATE_EPOCH or 0. ``compression`` is ``none`` or ``gzip``; ``align``
    zero-pads the whole output to a multiple of that many bytes. Returns the sha256 and size of what
    was written, hashed on the way out.
    """
    mtime = pinned_epoch() if mtime is None else mtime
    _check_mtime(mtime)
    if compression not in COMPRESSIONS:
        msg = f"unknown compression {compression!r}: expected one of {', '.join(sorted(COMPRESSIONS))}"
        raise UsageError(msg)
    if align < 1:
        msg = f"alignment {align}: expected a positive number of bytes"
        raise UsageError(msg)
    records = plan(entries)
    sink = HashingSink(out)
    gz = GzipSink(sink, GZIP_LEVEL) if compression == "gzip" else None
    # compression, hashing and writes run beside the reading of the next files
    background: Background[bytes | bytearray | memoryview] = Background(
        (gz if gz is not None else sink).write, name="cpio-writer"
    )
    writer = _Writer(background, mtime)
    total = sum(r.entry.size for r in records if r.with_data and r.entry.kind == "file")
    try:
        with log.progress("cpio", total) as bar:
            for rec in records:
                if n := writer.record(rec):
                    bar.update(n)
        writer.trailer()
    except _OutputFailed as exc:
        background.close(reraise=False)
        raise exc.error from None  # the output's own error, for the caller that knows its name
    except BaseException:
        background.close(reraise=False)  # the first failure is the one to report
        raise
    background.close()
    if gz is not None:
        gz.close()
    if pad := -sink.hashed.size % align:
        sink.write(b"\0" * pad)
    return WriteResult(sink.hashed.hexdigest(), sink.hashed.size, len(records))


def write_cpio_file(
    entries: Iterable[Entry],
    path: str | os.PathLike[str],
    *,
    mtime: int | None = None,
    compression: Compression = "none",
    align: int = 1,
) -> WriteResult:
    """:func:`write_cpio` into ``path`` atomically (nothing is left behind on failure)."""
    try:
        with atomic_write(path, big=True) as fh:
            return write_cpio(entries, fh, mtime=mtime, compression=compression, align=align)
    except OSError as exc:  # reading errors are ArchiveErrors already: this is the output
        msg = f"cannot write archive: {exc.strerror or exc}"
        raise FileAccessError(msg, path=os.fspath(path)) from None
