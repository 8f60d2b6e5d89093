"""The one way eifbuild writes a tree of files under a root it does not trust the contents of.

Every writer that materializes paths named by an input (store entries pulled from a remote cache,
``oci unpack``, ``extract --unpack``, the self-check's project copy) goes through
:class:`TreeWriter`. It holds an fd of the root and reaches every path one component at a time
with ``openat(…, O_DIRECTORY | O_NOFOLLOW)``: no symlink is followed for any parent or for the
final component, whatever the tree already holds or another process puts there meanwhile. A path
whose parent is a symlink or a file is refused (:class:`UnsafePathError`), never written through.

Dangerous nodes are a policy here too: device nodes are not created and setuid/setgid bits are
not set on anything but a directory (where setgid only passes the group on) unless the writer was
asked to (``preserve_special``); what was left out is in :attr:`TreeWriter.skipped`, for the caller
to list.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

from . import treepath
from .fsutil import CHUNK

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from .fsutil import Readable

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_BITS: Final = stat.S_ISUID | stat.S_ISGID


class UnsafePathError(Exception):
    """A path cannot be written without following a symlink (or it crosses a file, or has ``..``)."""


@dataclass(frozen=True)
class Skipped:
    """A node or a mode bit the writer left out: the path, and what (``char device 1:1``,
    ``setuid/setgid bits of 4755``)."""

    path: str
    what: str


class TreeWriter:
    """Create files, directories, links and nodes under ``root`` (an existing directory), never
    through a symlink. Use as a context manager (it holds fds); ``rel`` paths are ``/``-separated,
    relative to the root, without ``..``."""

    def __init__(self, root: str | os.PathLike[str], *, preserve_special: bool = False) -> None:
        self.root = os.fspath(root)
        self.preserve_special = preserve_special
        self.skipped: list[Skipped] = []
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._last: tuple[tuple[str, ...], int] | None = None  # the last parent opened, kept open

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._forget()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    # -- paths -----------------------------------------------------------------------------------
    def _forget(self) -> None:
        if self._last is not None:
            os.close(self._last[1])
            self._last = None

    @staticmethod
    def _split(rel: str) -> tuple[str, ...]:
        parts = treepath.split(rel)
        if not parts or ".." in parts:
            msg = f"{rel!r}: not a path below the root"
            raise UnsafePathError(msg)
        return tuple(parts)

    def _parent(self, parts: tuple[str, ...], *, create: bool) -> int:
        """An fd of the directory holding ``parts[-1]`` (owned by the writer: do not close it)."""
        dirs = parts[:-1]
        if self._last is not None and self._last[0] == dirs:
            return self._last[1]
        self._forget()
        fd = os.dup(self._root_fd)
        try:
            for i, name in enumerate(dirs):
                child = self._step(fd, name, "/".join(dirs[: i + 1]), create=create)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        self._last = (dirs, fd)
        return fd

    @staticmethod
    def _step(fd: int, name: str, shown: str, *, create: bool) -> int:
        """Open directory ``name`` in ``fd``, making it if missing (like ``mkdir -p``)."""
        try:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                st = os.lstat(name, dir_fd=fd)
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                msg = f"parent {shown!r} is {what}: refused (a write never follows a symlink)"
                raise UnsafePathError(msg) from None
            raise
        return child

    def lstat(self, rel: str) -> os.stat_result | None:
        """The node at ``rel`` itself (a symlink is not followed), or None."""
        parts = self._split(rel)
        try:
            return os.lstat(parts[-1], dir_fd=self._parent(parts, create=False))
        except FileNotFoundError:
            return None

    # -- creating --------------------------------------------------------------------------------
    def mkdir(self, rel: str, mode: int = 0o700) -> None:
        """Make directory ``rel`` and its missing parents (as ``mkdir -p``); an existing one is kept."""
        parts = self._split(rel)
        fd = self._parent(parts, create=True)
        try:
            os.mkdir(parts[-1], mode, dir_fd=fd)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(parts[-1], dir_fd=fd).st_mode):
                raise

    def open_file(
        self, rel: str, mode: int = 0o600, *, exclusive: bool = True, readable: bool = False
    ) -> IO[bytes]:
        """A new file at ``rel`` to write (parents made); ``exclusive=False`` also truncates an
        existing regular file (never a symlink's target). ``readable``: its fd can be read too
        (``os.pread``), for a writer that hashes what it wrote."""
        parts = self._split(rel)
        flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        flags |= os.O_EXCL if exclusive else os.O_TRUNC
        fd = os.open(parts[-1], flags, mode, dir_fd=self._parent(parts, create=True))
        return os.fdopen(fd, "wb")

    def write_file(self, rel: str, src: Readable, mode: int = 0o644) -> int:
        """Copy ``src`` into the new file ``rel``, then give it ``mode``; return the bytes written."""
        size = 0
        with self.open_file(rel) as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
            os.fchmod(out.fileno(), self._mode(rel, mode))
        return size

    def symlink(self, rel: str, target: str) -> None:
        parts = self._split(rel)
        os.symlink(target, parts[-1], dir_fd=self._parent(parts, create=True))

    def link(self, rel: str, existing: str) -> None:
        """Hard link ``rel`` to the node at ``existing`` (itself, were it a symlink)."""
        src = self._split(existing)
        src_fd = os.dup(self._parent(src, create=False))
        try:
            parts = self._split(rel)
            dst_fd = self._parent(parts, create=True)
            os.link(src[-1], parts[-1], src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        finally:
            os.close(src_fd)

    def mkfifo(self, rel: str, mode: int = 0o644) -> None:
        parts = self._split(rel)
        os.mkfifo(parts[-1], 0o600, dir_fd=self._parent(parts, create=True))
        self.chmod(rel, mode)

    def device(self, rel: str, kind: str, mode: int, rdev: tuple[int, int]) -> bool:
        """Make a ``char`` or ``block`` device node, only with ``preserve_special`` (else it is
        listed in :attr:`skipped`); return whether it was made. Raises PermissionError when not root."""
        if not self.preserve_special:
            self.skipped.append(Skipped(rel, f"{kind} device {rdev[0]}:{rdev[1]}"))
            return False
        parts = self._split(rel)
        fd = self._parent(parts, create=True)
        node = stat.S_IFCHR if kind == "char" else stat.S_IFBLK
        os.mknod(parts[-1], node | 0o600, os.makedev(*rdev), dir_fd=fd)
        self.chmod(rel, mode)
        return True

    # -- changing --------------------------------------------------------------------------------
    def unlink(self, rel: str) -> None:
        parts = self._split(rel)
        os.unlink(parts[-1], dir_fd=self._parent(parts, create=False))

    def chmod(self, rel: str, mode: int) -> None:
        """Set ``mode`` (setuid/setgid of a non-directory only with ``preserve_special``) on the
        node at ``rel``; a symlink is left alone, never followed."""
        parts = self._split(rel)
        parent = self._parent(parts, create=False)
        st = os.lstat(parts[-1], dir_fd=parent)
        if stat.S_ISLNK(st.st_mode):
            return
        mode = stat.S_IMODE(mode) if stat.S_ISDIR(st.st_mode) else self._mode(rel, mode)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):  # opening a device may do things
            os.chmod(parts[-1], mode, dir_fd=parent)
            return
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(parts[-1], flags, dir_fd=parent)
        except PermissionError:  # not readable by us: by name, from the held parent (checked above)
            os.chmod(parts[-1], mode, dir_fd=parent)
            return
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def utime(self, rel: str, mtime: int) -> None:
        parts = self._split(rel)
        os.utime(parts[-1], (mtime, mtime), dir_fd=self._parent(parts, create=False), follow_symlinks=False)

    def _mode(self, rel: str, mode: int) -> int:
        mode = stat.S_IMODE(mode)
        if mode & _SPECIAL_BITS and not self.preserve_special:
            self.skipped.append(Skipped(rel, f"setuid/setgid bits of {mode:04o}"))
            mode &= ~_SPECIAL_BITS
        return mode


@contextlib.contextmanager
def tree_writer(root: str | os.PathLike[str], *, preserve_special: bool = False) -> Iterator[TreeWriter]:
    """A :class:`TreeWriter` for ``root`` (created if missing), closed afterwards."""
    os.makedirs(root, exist_ok=True)
    with TreeWriter(root, preserve_special=preserve_special) as writer:
        yield writer


def copy_node(writer: TreeWriter, source: str | os.PathLike[str], rel: str) -> None:
    """Copy one local node to ``rel`` (a symlink as a symlink, a directory without its contents, a
    device or fifo as a node, by the writer's policy); a non-directory already at ``rel`` is replaced."""
    st = os.lstat(source)
    old = writer.lstat(rel)
    if old is not None and not (stat.S_ISDIR(old.st_mode) and stat.S_ISDIR(st.st_mode)):
        if stat.S_ISDIR(old.st_mode):
            msg = f"{rel!r} is a directory, and {os.fspath(source)!r} is not"
            raise UnsafePathError(msg)
        writer.unlink(rel)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        writer.symlink(rel, os.readlink(source))
        return
    if stat.S_ISDIR(st.st_mode):
        writer.mkdir(rel)
        writer.chmod(rel, mode | 0o700)
    elif stat.S_ISREG(st.st_mode):
        with open(source, "rb") as fh:
            writer.write_file(rel, fh, mode)
    elif stat.S_ISFIFO(st.st_mode):
        writer.mkfifo(rel, mode)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
        if not writer.device(rel, kind, mode, (os.major(st.st_rdev), os.minor(st.st_rdev))):
            return
    else:
        writer.skipped.append(Skipped(rel, "a socket"))
        return
    writer.utime(rel, int(st.st_mtime))
