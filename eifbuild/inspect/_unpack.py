"""Unpacking one ramdisk's members into a directory, safely and unprivileged.

No member may land outside the directory: a leading ``/`` is dropped (the kernel unpacks relative
to the root too), ``..`` is refused, and every write goes through the one safe tree writer
(:mod:`eifbuild.util.safetree`): a symlink in parent position is refused, never followed, and no
last component is followed either. Symlinks are created as they are; device nodes, fifos and
sockets are listed, not created, and setuid/setgid bits are dropped (and listed) unless
``--preserve-special`` (then devices, as root, and fifos are made and the bits kept). Ownership is
not applied; modes and mtimes are, after every member is written (directories keep the owner's rwx
so the tree stays removable).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final, TypeVar

from ..errors import ArchiveError, FileAccessError
from ..util import treepath
from ..util.bounded import NAME_MAX
from ..util.safetree import TreeWriter, UnsafePathError
from ._stream import SectionStream, open_section, ramdisk_members
from ._summary import member_kind

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..eif import EifImage, JsonValue, Section
    from ..ramdisk import CpioMember

_SPECIAL: Final = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO)  # made only with --preserve-special
_OWNER_ALL: Final = 0o700
T = TypeVar("T")


@dataclass
class _Unpacker:
    writer: TreeWriter
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
            self._replace(rel, member)
            target = rel
        elif member.size:
            target = first  # GNU cpio stores a hard-link group's content with its last member
        else:
            return None
        self._open = self._guard(lambda: self.writer.open_file(target, exclusive=False), target, member)
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
        if kind == stat.S_IFDIR:
            self._mkdir(rel, member)
        elif kind == stat.S_IFLNK:
            self._replace(rel, member)
            target = member.data.decode("utf-8", "surrogateescape")
            self._guard(lambda: self.writer.symlink(rel, target), rel, member)
        elif kind == stat.S_IFREG:
            self._file(rel, member)
        elif not self._special(rel, member, kind):
            self.not_created.append(self._listing(member, rel))
            return
        self.created += 1
        self._finish.append((rel, member.mode, member.mtime))

    def _special(self, rel: str, member: CpioMember, kind: int) -> bool:
        """A device node or fifo, made only when the writer preserves special nodes (and, for a
        device, when we are root); whether it was made."""
        if not self.writer.preserve_special or kind not in _SPECIAL:
            return False
        self._replace(rel, member)
        if kind == stat.S_IFIFO:
            self._guard(lambda: self.writer.mkfifo(rel, stat.S_IMODE(member.mode)), rel, member)
            return True
        name = "char" if kind == stat.S_IFCHR else "block"
        try:
            self.writer.device(rel, name, stat.S_IMODE(member.mode), member.rdev)
        except PermissionError:
            return False  # not root: listed, as without --preserve-special
        except OSError as exc:
            raise self._error(rel, exc) from None
        return True

    def finish(self) -> None:
        """Modes and mtimes, deepest first so a read-only directory is fixed after its contents."""
        for rel, mode, mtime in sorted(self._finish, key=lambda item: -item[0].count("/")):
            try:
                if not stat.S_ISLNK(mode):  # a later member may have made it a symlink: never followed
                    self.writer.chmod(rel, stat.S_IMODE(mode) | (_OWNER_ALL if stat.S_ISDIR(mode) else 0))
                self.writer.utime(rel, mtime)
            except OSError as exc:
                raise self._error(rel, exc) from None

    def _file(self, rel: str, member: CpioMember) -> None:
        if member.nlink <= 1:
            return
        first = self._first_link.setdefault(member.ino, rel)
        if first != rel:
            self._replace(rel, member)
            self._guard(lambda: self.writer.link(rel, first), rel, member)

    def _mkdir(self, rel: str, member: CpioMember) -> None:
        st = self._guard(lambda: self.writer.lstat(rel), rel, member)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            self._replace(rel, member)
        self._guard(lambda: self.writer.mkdir(rel, _OWNER_ALL), rel, member)

    def _relative(self, member: CpioMember) -> str:
        """The member's path inside the root, after checking it cannot leave it."""
        parts = treepath.split(member.name)
        if ".." in parts:
            msg = "path climbs out of the tree with '..': refused"
            raise ArchiveError(msg, path=self.where, member=member.name)
        if any(len(os.fsencode(part)) > NAME_MAX for part in parts):
            msg = f"a path component longer than {NAME_MAX} bytes: no file system can create it"
            raise ArchiveError(msg, path=self.where, member=member.name[:300])
        return "/".join(parts) or "."

    def _replace(self, rel: str, member: CpioMember) -> None:
        """Make room for a member whose name is already taken (a later member wins, as in the kernel)."""
        st = self._guard(lambda: self.writer.lstat(rel), rel, member)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            msg = f"{rel!r} is a directory in the archive and a non-directory later: refused"
            raise ArchiveError(msg, path=self.where)
        self._guard(lambda: self.writer.unlink(rel), rel, member)

    def _guard(self, action: Callable[[], T], rel: str, member: CpioMember) -> T:
        try:
            return action()
        except UnsafePathError as exc:
            raise ArchiveError(str(exc), path=self.where, member=member.name) from None
        except OSError as exc:
            raise self._error(rel, exc) from None

    def _error(self, rel: str, exc: OSError) -> FileAccessError:
        msg = f"cannot write {rel!r}: {exc.strerror or exc}"
        return FileAccessError(msg, path=self.writer.root)

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


def unpack_ramdisk(
    image: EifImage,
    section: Section,
    index: int,
    root: Path,
    *,
    preserve_special: bool = False,
    raw: SectionStream | None = None,
) -> dict[str, JsonValue]:
    """Unpack ramdisk ``index`` into ``root`` (created); return what the manifest records.

    ``raw``: the section as it is being read already (``extract`` writes and hashes the ramdisk
    file from the same pass); otherwise the section is opened and read here, without hashing.
    """
    where = f"ramdisk[{index}]"
    root.mkdir(mode=_OWNER_ALL)
    with TreeWriter(root, preserve_special=preserve_special) as writer:
        unpacker = _Unpacker(writer, f"{image.path}, {where}")
        wanted = stat.S_ISLNK
        with contextlib.ExitStack() as stack:
            if raw is None:
                raw = stack.enter_context(open_section(image, section, where, hashed=False))
            streams, members = stack.enter_context(
                ramdisk_members(
                    raw, data=lambda m: wanted(m.mode), copy_to=unpacker.content_file, hashed=False
                )
            )
            for member in members:
                unpacker.place(member)
        unpacker.finish()
    dropped: list[JsonValue] = [{"path": s.path, "what": s.what} for s in writer.skipped]
    return {
        "directory": root.name,
        "compression": streams.container.compression,
        "created": unpacker.created,
        "not_created": list(unpacker.not_created),
        "special_bits_dropped": dropped,
    }
