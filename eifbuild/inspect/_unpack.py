"""Unpacking one ramdisk's members into a directory, safely and unprivileged.

No member may land outside the directory: a leading ``/`` is dropped (the kernel unpacks relative
to the root too), ``..`` is refused, and every parent must be a real directory made here (checked
with ``lstat``, so a symlink in parent position is refused, never followed). Files are opened with
``O_NOFOLLOW``. Symlinks are created as they are; device nodes, fifos and sockets are listed, not
created. Ownership is not applied; modes and mtimes are, after every member is written (directories
keep the owner's rwx so the tree stays removable).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final, TypeVar

from ..errors import ArchiveError, FileAccessError
from ..util import treepath
from ..util.bounded import NAME_MAX
from ._stream import open_section, ramdisk_members
from ._summary import member_kind

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..eif import EifImage, JsonValue, Section
    from ..ramdisk import CpioMember

_NOT_CREATED: Final = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
_OWNER_ALL: Final = 0o700
T = TypeVar("T")


@dataclass
class _Unpacker:
    root: Path
    where: str
    created: int = 0
    not_created: list[dict[str, JsonValue]] = field(default_factory=list)
    _open: IO[bytes] | None = None
    _first_link: dict[int, str] = field(default_factory=dict)  # inode -> first path of its hard-link group
    _finish: list[tuple[str, int, int]] = field(default_factory=list)  # (path, mode, mtime), in member order

    def content_file(self, member: CpioMember) -> IO[bytes] | None:
        """Where a regular file's content goes while the reader streams it."""
        if not stat.S_ISREG(member.mode):
            return None
        rel = self._relative(member)
        first = self._first_link.get(member.ino) if member.nlink > 1 else None
        if first is None:
            self._replace(rel)
            target = rel
        elif member.size:
            target = first  # GNU cpio stores a hard-link group's content with its last member
        else:
            return None
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        self._open = os.fdopen(self._guard(lambda: os.open(self.root / target, flags, 0o600), target), "wb")
        return self._open

    def place(self, member: CpioMember) -> None:
        """Create what the member is, now that its content (if any) is written."""
        if self._open is not None:
            self._open.close()
            self._open = None
        rel = self._relative(member)
        kind = stat.S_IFMT(member.mode)
        if rel == ".":
            return
        if kind in _NOT_CREATED:
            self.not_created.append(self._listing(member, rel))
            return
        if kind == stat.S_IFDIR:
            self._mkdir(rel, member)
        elif kind == stat.S_IFLNK:
            self._replace(rel)
            target = member.data.decode("utf-8", "surrogateescape")
            self._guard(lambda: os.symlink(target, self.root / rel), rel)
        elif kind == stat.S_IFREG:
            self._file(rel, member)
        else:
            self.not_created.append(self._listing(member, rel))
            return
        self.created += 1
        self._finish.append((rel, member.mode, member.mtime))

    def finish(self) -> None:
        """Modes and mtimes, deepest first so a read-only directory is fixed after its contents."""
        for rel, mode, mtime in sorted(self._finish, key=lambda item: -item[0].count("/")):
            try:
                _set_mode_and_time(self.root / rel, mode, mtime)
            except OSError as exc:
                raise self._error(rel, exc) from None

    def _file(self, rel: str, member: CpioMember) -> None:
        if member.nlink <= 1:
            return
        first = self._first_link.setdefault(member.ino, rel)
        if first != rel:
            self._replace(rel)
            self._guard(lambda: os.link(self.root / first, self.root / rel, follow_symlinks=False), rel)

    def _mkdir(self, rel: str, member: CpioMember) -> None:
        path = self.root / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._guard(lambda: os.mkdir(path, _OWNER_ALL), rel)
            return
        if not stat.S_ISDIR(st.st_mode):
            self._replace(rel)
            self._guard(lambda: os.mkdir(path, _OWNER_ALL), rel)

    def _relative(self, member: CpioMember) -> str:
        """The member's path inside the root, after checking it cannot leave it."""
        parts = treepath.split(member.name)
        if ".." in parts:
            msg = "path climbs out of the tree with '..': refused"
            raise ArchiveError(msg, path=self.where, member=member.name)
        if any(len(os.fsencode(part)) > NAME_MAX for part in parts):
            msg = f"a path component longer than {NAME_MAX} bytes: no file system can create it"
            raise ArchiveError(msg, path=self.where, member=member.name[:300])
        for depth in range(1, len(parts)):
            self._parent("/".join(parts[:depth]), member.name)
        return "/".join(parts) or "."

    def _parent(self, rel: str, name: str) -> None:
        path = self.root / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._guard(lambda: os.mkdir(path, _OWNER_ALL), rel)
            return
        if stat.S_ISLNK(st.st_mode):
            msg = f"parent {rel!r} is a symlink: refused (extracting never follows symlinks)"
            raise ArchiveError(msg, path=self.where, member=name)
        if not stat.S_ISDIR(st.st_mode):
            msg = f"parent {rel!r} is not a directory"
            raise ArchiveError(msg, path=self.where, member=name)

    def _replace(self, rel: str) -> None:
        """Make room for a member whose name is already taken (a later member wins, as in the kernel)."""
        path = self.root / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            msg = f"{rel!r} is a directory in the archive and a non-directory later: refused"
            raise ArchiveError(msg, path=self.where)
        self._guard(lambda: os.unlink(path), rel)

    def _guard(self, action: Callable[[], T], rel: str) -> T:
        try:
            return action()
        except OSError as exc:
            raise self._error(rel, exc) from None

    def _error(self, rel: str, exc: OSError) -> FileAccessError:
        msg = f"cannot write {rel!r}: {exc.strerror or exc}"
        return FileAccessError(msg, path=self.root)

    @staticmethod
    def _listing(member: CpioMember, rel: str) -> dict[str, JsonValue]:
        return {
            "path": rel,
            "type": member_kind(member.mode),
            "mode": f"{stat.S_IMODE(member.mode):04o}",
            "uid": member.uid,
            "gid": member.gid,
            "rdev": [member.rdev[0], member.rdev[1]],
        }


def _set_mode_and_time(path: Path, mode: int, mtime: int) -> None:
    # a later member may have replaced this one by a symlink: chmod must never follow one
    if not stat.S_ISLNK(mode) and not stat.S_ISLNK(os.lstat(path).st_mode):
        os.chmod(path, stat.S_IMODE(mode) | (_OWNER_ALL if stat.S_ISDIR(mode) else 0))
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def unpack_ramdisk(image: EifImage, section: Section, index: int, root: Path) -> dict[str, JsonValue]:
    """Unpack ramdisk ``index`` into ``root`` (created); return what the manifest records."""
    where = f"ramdisk[{index}]"
    root.mkdir(mode=_OWNER_ALL)
    unpacker = _Unpacker(root, f"{image.path}, {where}")
    wanted = stat.S_ISLNK
    with (
        open_section(image, section, where, hashed=False) as raw,  # extract hashed the section already
        ramdisk_members(raw, data=lambda m: wanted(m.mode), copy_to=unpacker.content_file, hashed=False) as (
            streams,
            members,
        ),
    ):
        for member in members:
            unpacker.place(member)
    unpacker.finish()
    return {
        "directory": root.name,
        "compression": streams.container.compression,
        "created": unpacker.created,
        "not_created": list(unpacker.not_created),
    }
