"""Reading verified source archives safely: tar (plain, gz, bz2, xz, zstd), zip and Debian .deb.

Every operation reads the archive once, in archive order, and builds a :mod:`~eifbuild.sources.nar`
tree of its members (after ``strip`` leading path components) while checking each name: absolute
paths, ``..`` components, duplicates, members below a symlink or a file, and special files
(devices, FIFOs) are rejected with an :class:`ArchiveError` naming the archive and the member. When
a tree is hashed or unpacked, every symlink must also resolve inside the tree
(:func:`~eifbuild.util.treepath.resolve_link`: absolute targets and targets climbing above the
root, also through other symlinks, are rejected); symlinks are created last, so no write ever goes
through one.

A ``.deb`` is read as its ``data.tar.*`` (ar archive → data.tar.{xz,zst,gz,bz2} → members).

- :func:`nar_digest_of_archive` hashes the tree as Nix would hash it unpacked; the contents are
  spooled into one temp file so the NAR can be written in sorted order, whatever the archive order,
  and the result never depends on the filesystem (case-insensitive macOS included);
- :func:`extract_member` copies one regular file out;
- :func:`unpack` writes the tree into an empty directory and returns its NAR digest.
"""

from __future__ import annotations

import lzma
import os
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Literal, cast

from ..errors import ArchiveError, did_you_mean
from ..util import treepath
from ..util.fsutil import Readable, StreamHasher, copy_hashed
from .nar import Directory, NarDigest, NarNode, Regular, Symlink, file_opener, nar_digest

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    import zstandard

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Format = Literal["tar", "zip", "deb"]
MemberKind = Literal["file", "dir", "symlink", "hardlink"]

FORMATS: Final = "tar, tar.gz, tar.bz2, tar.xz, tar.zst, zip, deb"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_AR_MAGIC: Final = b"!<arch>\n"
_AR_HEADER: Final = 60
_ZIP_UTF8: Final = 0x800  # general purpose flag: names are UTF-8
_CORRUPT: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    zipfile.BadZipFile,
    OSError,
)
if sys.version_info >= (3, 14):  # pragma: no cover - Python 3.14+
    ZSTD_ERROR: type[Exception] = zstd.ZstdError
else:
    ZSTD_ERROR = zstandard.ZstdError
_CORRUPT += (ZSTD_ERROR,)


@dataclass(frozen=True)
class ArchiveMember:
    """One archive entry as stored: its raw name, type, size, owner-x bit and link target."""

    name: str
    kind: MemberKind
    size: int = 0
    executable: bool = False
    link: str = ""  # symlink target, or the archive name a hardlink points to


# -- format detection and member iteration ---------------------------------------------------------
def detect_format(path: Path) -> Format:
    """Sniff the archive format from its first bytes (names of downloads are not trusted)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_AR_MAGIC):
        return "deb"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", ZSTD_MAGIC)) or head[257:262] == b"ustar":
        return "tar"
    msg = f"not a recognised archive (supported: {FORMATS})"
    raise ArchiveError(msg, path=path)


def iter_members(path: Path) -> Iterator[tuple[ArchiveMember, IO[bytes] | None]]:
    """Yield each entry in archive order, with a stream of its content for regular files.

    A content stream is only valid until the next entry is requested.
    """
    fmt = detect_format(path)
    try:
        if fmt == "zip":
            yield from _zip_members(path)
        elif fmt == "deb":
            with open(path, "rb") as fh:
                yield from _tar_members(_deb_data(fh, path), path)
        else:
            with open(path, "rb") as fh:
                yield from _tar_members(fh, path)
    except ArchiveError:
        raise
    except _CORRUPT as exc:
        msg = f"corrupt or truncated archive: {exc}"
        raise ArchiveError(msg, path=path) from None


def zstd_reader(raw: Readable) -> IO[bytes]:
    """A reader of the zstd stream ``raw`` (all its frames): the stdlib's on 3.14+, else zstandard's."""
    if sys.version_info >= (3, 14):
        return zstd.ZstdFile(raw)  # type: ignore[arg-type]  # pragma: no cover - Python 3.14+
    source = cast("IO[bytes]", raw)
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
    return cast("IO[bytes]", reader)


class _Peeked:
    """A stream whose first bytes were already read (to sniff the compression)."""

    def __init__(self, head: bytes, rest: Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(n)
        if n < 0 or n > len(self._head):
            data = self._head + self._rest.read(-1 if n < 0 else n - len(self._head))
            self._head = b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        return data


def _tar_members(raw: Readable, path: Path) -> Iterator[tuple[ArchiveMember, IO[bytes] | None]]:
    """Members of a tar stream, compressed with gzip, bzip2, xz or zstd or not at all."""
    head = raw.read(len(ZSTD_MAGIC))
    stream: Readable = _Peeked(head, raw)
    if head == ZSTD_MAGIC:
        stream = zstd_reader(stream)
    with tarfile.open(fileobj=cast("IO[bytes]", stream), mode="r|*") as tar:
        for info in tar:
            executable = bool(info.mode & stat.S_IXUSR)
            if info.isreg():
                yield ArchiveMember(info.name, "file", info.size, executable), tar.extractfile(info)
            elif info.isdir():
                yield ArchiveMember(info.name, "dir"), None
            elif info.issym():
                yield ArchiveMember(info.name, "symlink", link=info.linkname), None
            elif info.islnk():
                yield ArchiveMember(info.name, "hardlink", link=info.linkname), None
            else:
                msg = "device files and FIFOs are not allowed in source archives"
                raise ArchiveError(msg, path=path, member=info.name)


def _zip_members(path: Path) -> Iterator[tuple[ArchiveMember, IO[bytes] | None]]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.flag_bits & _ZIP_UTF8:
                # zipfile decoded the raw name as cp437; Unix zip tools store the bytes as they are.
                info.filename = info.filename.encode("cp437").decode("utf-8", "surrogateescape")
            mode = info.external_attr >> 16
            if info.is_dir():
                yield ArchiveMember(info.filename, "dir"), None
            elif stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "surrogateescape")
                yield ArchiveMember(info.filename, "symlink", link=target), None
            else:
                with zf.open(info) as stream:
                    yield (
                        ArchiveMember(info.filename, "file", info.file_size, bool(mode & stat.S_IXUSR)),
                        stream,
                    )


class _ArMemberView:
    """Read-only view of ``size`` bytes of a file starting at its current position."""

    def __init__(self, fh: IO[bytes], size: int) -> None:
        self._fh = fh
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._fh.read(n)
        self._left -= len(data)
        return data


class _Guarded:
    """A member's content stream whose decompression errors become :class:`ArchiveError`."""

    def __init__(self, stream: IO[bytes], archive: Path) -> None:
        self._stream = stream
        self._archive = archive

    def read(self, n: int = -1) -> bytes:
        try:
            return self._stream.read(n)
        except _CORRUPT as exc:
            msg = f"corrupt or truncated archive: {exc}"
            raise ArchiveError(msg, path=self._archive) from None


def _deb_data(fh: IO[bytes], path: Path) -> Readable:
    """Position ``fh`` on the data.tar.* member of a .deb (an ar archive) and return a view of it."""
    fh.seek(len(_AR_MAGIC))
    while True:
        header = fh.read(_AR_HEADER)
        if len(header) < _AR_HEADER:
            msg = "no data.tar member in this .deb"
            raise ArchiveError(msg, path=path)
        if header[58:60] != b"`\n":
            msg = "corrupt ar header in this .deb"
            raise ArchiveError(msg, path=path)
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        if name.startswith("data.tar"):
            return _ArMemberView(fh, size)
        fh.seek(size + size % 2, os.SEEK_CUR)


# -- names and the tree ----------------------------------------------------------------------------
def split_name(name: str, *, archive: Path | str, strip: int = 0) -> list[str] | None:
    """Path components of an archive name after ``strip``; None when the entry is stripped away.

    ``./`` and trailing slashes are ignored; absolute names and ``..`` are unsafe and rejected.
    """
    if name.startswith("/"):
        msg = "absolute path in archive"
        raise ArchiveError(msg, path=archive, member=name)
    parts = [p for p in name.split("/") if p not in {"", "."}]
    if ".." in parts:
        msg = "'..' in archive path"
        raise ArchiveError(msg, path=archive, member=name)
    if len(parts) <= strip:
        return None
    return parts[strip:]


@dataclass(frozen=True)
class _Linkable:
    """A tree node as :mod:`~eifbuild.util.treepath` sees it."""

    kind: str
    target: str = ""


class TreeBuilder:
    """Collects members into a NAR tree, rejecting duplicates and paths through symlinks or files."""

    def __init__(self, archive: Path, strip: int) -> None:
        self.archive = archive
        self.strip = strip
        self.root = Directory()
        self.symlinks: list[tuple[list[str], Symlink, str]] = []  # path, link, name in the archive

    def place(self, member: ArchiveMember) -> list[str] | None:
        parts = split_name(member.name, archive=self.archive, strip=self.strip)
        if parts is None and member.kind != "dir":
            msg = f"strip = {self.strip} would drop this {member.kind}; only directories may be stripped"
            raise ArchiveError(msg, path=self.archive, member=member.name)
        return parts

    def add(self, parts: list[str], member: ArchiveMember, node: NarNode) -> None:
        parent = self._parent(parts, member)
        existing = parent.entries.get(parts[-1])
        if isinstance(node, Directory) and isinstance(existing, Directory):
            return  # a directory listed twice (or after its children) is harmless
        if existing is not None:
            msg = "duplicate member (the archive holds this path more than once)"
            raise ArchiveError(msg, path=self.archive, member=member.name)
        parent.entries[parts[-1]] = node
        if isinstance(node, Symlink):
            self.symlinks.append((parts, node, member.name))

    def _parent(self, parts: list[str], member: ArchiveMember) -> Directory:
        node = self.root
        for i, comp in enumerate(parts[:-1]):
            child = node.entries.setdefault(comp, Directory())
            if not isinstance(child, Directory):
                what = "symlink" if isinstance(child, Symlink) else "file"
                msg = f"path goes through the {what} {'/'.join(parts[: i + 1])!r}"
                raise ArchiveError(msg, path=self.archive, member=member.name)
            node = child
        return node

    def lookup(self, parts: list[str]) -> NarNode | None:
        node: NarNode = self.root
        for comp in parts:
            if not isinstance(node, Directory) or comp not in node.entries:
                return None
            node = node.entries[comp]
        return node

    def hardlink_target(self, member: ArchiveMember) -> Regular:
        parts = split_name(member.link, archive=self.archive, strip=self.strip)
        target = self.lookup(parts) if parts else None
        if not isinstance(target, Regular):
            msg = f"hard link to {member.link!r}, which is not an earlier regular file in the archive"
            raise ArchiveError(msg, path=self.archive, member=member.name)
        return target

    def check_symlinks(self) -> None:
        """Every symlink must resolve (through other symlinks too) to a path inside the tree."""
        for parts, link, name in self.symlinks:
            try:
                treepath.resolve_link(parts[:-1], link.target, self._linkable)
            except treepath.OutsideTreeError as exc:
                absolute = "the absolute path " if exc.absolute else ""
                msg = f"symlink to {absolute}{exc.target!r} points outside the tree"
                raise ArchiveError(msg, path=self.archive, member=name) from None
            except treepath.SymlinkLoopError:  # a total, like Linux: bounds the work too
                msg = f"symlink loop (more than {treepath.MAX_HOPS} links to follow)"
                raise ArchiveError(msg, path=self.archive, member=name) from None

    def _linkable(self, path: str) -> _Linkable | None:
        node = self.lookup(path.split("/"))
        if isinstance(node, Symlink):
            return _Linkable("symlink", node.target)
        return None if node is None else _Linkable("dir" if isinstance(node, Directory) else "file")

    def file_paths(self) -> list[str]:
        found: list[str] = []

        def walk(node: Directory, prefix: str) -> None:
            for name, child in node.entries.items():
                if isinstance(child, Directory):
                    walk(child, f"{prefix}{name}/")
                else:
                    found.append(prefix + name)

        walk(self.root, "")
        return found


def _node_for(member: ArchiveMember, builder: TreeBuilder, opener: Callable[[], IO[bytes]] | None) -> NarNode:
    if member.kind == "dir":
        return Directory()
    if member.kind == "symlink":
        return Symlink(member.link)
    if member.kind == "hardlink":
        return builder.hardlink_target(member)
    return Regular(member.size, member.executable, opener or _no_content)


# -- NAR hash --------------------------------------------------------------------------------------
def _blob_opener(blob: str, offset: int) -> Callable[[], IO[bytes]]:
    def open_at() -> IO[bytes]:
        fh = open(blob, "rb")  # noqa: SIM115 - the NAR writer closes it
        fh.seek(offset)
        return fh

    return open_at


def _copy(src: Readable, dst: IO[bytes]) -> int:
    return copy_hashed(src, StreamHasher(()), dst)  # no algorithms: it only counts


def nar_digest_of_archive(path: Path, *, strip: int = 0, tmp_dir: Path | None = None) -> NarDigest:
    """NAR hash of the tree the archive unpacks to (after ``strip``), computed from its members."""
    builder = TreeBuilder(path, strip)
    with tempfile.NamedTemporaryFile(prefix="nar-spool.", dir=tmp_dir) as blob:
        for member, stream in iter_members(path):
            parts = builder.place(member)
            if parts is None:
                continue
            opener = None
            if stream is not None:
                opener = _blob_opener(blob.name, blob.tell())
                written = _copy(_Guarded(stream, path), blob)
                member = ArchiveMember(member.name, "file", written, member.executable)  # noqa: PLW2901
            builder.add(parts, member, _node_for(member, builder, opener))
        builder.check_symlinks()
        blob.flush()
        return nar_digest(builder.root)


# -- one member ------------------------------------------------------------------------------------
def extract_member(path: Path, member: str, dest: Path, *, strip: int = 0) -> tuple[str, int]:
    """Copy the regular file ``member`` (a path after ``strip``) to ``dest``; return (sha256, size).

    Every name in the archive is checked; symlinks elsewhere are never written, so they are not judged.
    """
    want = split_name(member, archive=path)
    if not want:
        msg = "member must name a file inside the archive"
        raise ArchiveError(msg, path=path, member=member)
    builder = TreeBuilder(path, strip)
    result: tuple[str, int] | None = None
    link_to: ArchiveMember | None = None
    for entry, stream in iter_members(path):
        parts = builder.place(entry)
        if parts is None:
            continue
        builder.add(parts, entry, _node_for(entry, builder, None))
        if parts == want and stream is not None:
            result = write_hashed(_Guarded(stream, path), dest)
        elif parts == want and entry.kind == "hardlink":
            link_to = entry
    if link_to is not None:
        target = split_name(link_to.link, archive=path, strip=strip) or []
        return extract_member(path, "/".join(target), dest, strip=strip)
    if result is None:
        raise _missing_member(builder, want, path, member)
    return result


def _no_content() -> IO[bytes]:  # pragma: no cover - such trees are never serialised
    msg = "content is not kept for this tree"
    raise ArchiveError(msg)


def write_hashed(stream: Readable, dest: Path) -> tuple[str, int]:
    """Copy ``stream`` into the new file ``dest``; return the sha256 and size of what was written."""
    hasher = StreamHasher()
    with open(dest, "xb") as out:
        copy_hashed(stream, hasher, out)
    return hasher.hexdigest(), hasher.size


def _missing_member(builder: TreeBuilder, want: list[str], path: Path, member: str) -> ArchiveError:
    node = builder.lookup(want)
    if isinstance(node, Directory):
        return ArchiveError("member is a directory, not a file", path=path, member=member)
    if isinstance(node, Symlink):
        msg = f"member is a symlink to {node.target!r}; name the file it points to"
        return ArchiveError(msg, path=path, member=member)
    hint = did_you_mean("/".join(want), builder.file_paths())
    strip_note = f" after strip = {builder.strip}" if builder.strip else ""
    return ArchiveError(f"no such file in the archive{strip_note}{hint}", path=path, member=member)


# -- whole tree ------------------------------------------------------------------------------------
def unpack(path: Path, dest: Path, *, strip: int = 0) -> NarDigest:
    """Write the archive's tree into the empty directory ``dest``; return the tree's NAR digest.

    Files get mode 0755 or 0644 (only the executable bit is content); symlinks are checked and
    created after everything else. On error ``dest`` is left partly filled: the caller discards it.
    """
    builder = TreeBuilder(path, strip)
    for member, stream in iter_members(path):
        parts = builder.place(member)
        if parts is None:
            continue
        target = dest.joinpath(*parts)
        node = _node_for(member, builder, file_opener(target))
        builder.add(parts, member, node)  # checks the name before anything is written
        if member.kind == "dir":
            _make_dirs(target, path, member)
        elif member.kind != "symlink":
            _make_dirs(target.parent, path, member)
            if isinstance(node, Regular) and stream is None:  # a hard link: copy the earlier file
                with node.open() as src:
                    _write_file(src, target, node.executable, path, member)
            elif stream is not None:
                _write_file(_Guarded(stream, path), target, member.executable, path, member)
    builder.check_symlinks()
    for parts, link, name in builder.symlinks:
        target = dest.joinpath(*parts)
        _make_dirs(target.parent, path, ArchiveMember(name, "symlink"))
        os.symlink(link.target, target)
    return nar_digest(builder.root)


def _make_dirs(directory: Path, archive: Path, member: ArchiveMember) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create {directory.name!r}: {exc.strerror} (a name clash on a case-insensitive fs?)"
        raise ArchiveError(msg, path=archive, member=member.name) from None


def _write_file(
    stream: Readable, target: Path, executable: bool, archive: Path, member: ArchiveMember
) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o755 if executable else 0o644)
    except OSError as exc:
        msg = f"cannot create it: {exc.strerror} (a name clash on a case-insensitive fs?)"
        raise ArchiveError(msg, path=archive, member=member.name) from None
    with os.fdopen(fd, "wb") as out:
        _copy(stream, out)


def copy_tree(src: Path, dest: Path) -> NarDigest:
    """Copy a local directory into the empty ``dest`` with the same checks as an archive; NAR digest."""
    builder = TreeBuilder(src, 0)
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src).parts
        for name in sorted(dirnames + filenames):
            parts = [*rel, name]
            full = Path(dirpath, name)
            member = ArchiveMember("/".join(parts), "file")
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                builder.add(parts, member, Symlink(os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                builder.add(parts, member, Directory())
                dest.joinpath(*parts).mkdir()
            elif stat.S_ISREG(st.st_mode):
                target = dest.joinpath(*parts)
                executable = bool(st.st_mode & stat.S_IXUSR)
                with open(full, "rb") as fh:
                    _write_file(fh, target, executable, src, member)
                builder.add(parts, member, Regular(target.stat().st_size, executable, file_opener(target)))
            else:
                msg = "device files, sockets and FIFOs are not allowed in sources"
                raise ArchiveError(msg, path=src, member=member.name)
    builder.check_symlinks()
    for parts, link, _ in builder.symlinks:
        os.symlink(link.target, dest.joinpath(*parts))
    return nar_digest(builder.root)
