"""OCI layers applied into a rootfs *model*, and that model as cpio entries or an unpacked tree.

Nothing is extracted to build the model: each layer is an uncompressed tar on disk (a store entry,
see :mod:`eifbuild.oci.image`), read once header by header; the model keeps metadata only and points
file contents at (layer tar, offset, size). The rules are those of the OCI image spec's changeset
application, as umoci implements them (umoci is the test oracle):

- members apply in order; a member's parent path is resolved through the symlinks already in the
  model (scoped to the rootfs, like securejoin), the last component is never followed; missing
  parents are created as 0755 directories;
- a new member replaces what is at its path, except that a directory over a directory only updates
  the mode (its children stay); anything else over a directory drops the directory's subtree;
- ``.wh.NAME`` removes NAME and ``DIR/.wh..wh..opq`` empties DIR, but only of what lower layers
  put there: paths this layer created (and their ancestors) survive (the spec's "upper" set);
- a hard link shares the inode of the path it names (a later replacement of either path gives
  that path a new inode); modes keep setuid/setgid/sticky; owners and times are dropped (uid/gid 0
  as nitro-cli's ramdisk has them); char/block devices and fifos are kept as entries (an unpacked
  tree has device nodes and setuid/setgid bits only when asked: ``preserve_special``).

Unsafe layers are refused with an :class:`ArchiveError` naming the layer digest and the member:
absolute names, ``..`` components, symlinks whose target leaves the rootfs (from where the link
really is), hard links to absolute or ``..`` paths or to nothing, sparse files, unknown types.
"""

from __future__ import annotations

import functools
import io
import tarfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, Literal, cast

from .. import log
from ..errors import ArchiveError
from ..ramdisk import Entry
from ..util import treepath
from ..util.fsutil import CHUNK
from ..util.safetree import Skipped, TreeWriter, UnsafePathError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

InodeKind = Literal["file", "dir", "symlink", "char", "block", "fifo"]

WHITEOUT: Final = ".wh."
OPAQUE: Final = ".wh..wh..opq"
_DIR_MODE: Final = 0o755  # implicit parents: umoci's MkdirAll(0777) under the usual umask 022
_KINDS: Final[dict[bytes, InodeKind]] = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True, slots=True)
class LayerFile:
    """An uncompressed layer tar on disk and the digest it is known by (for messages)."""

    digest: str
    path: Path


@dataclass(frozen=True, slots=True)
class Unpacked:
    """What :meth:`Rootfs.unpack` wrote: the number of paths, and what it left out (device nodes,
    setuid/setgid bits) without ``preserve_special``."""

    paths: int
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True, slots=True)
class Inode:
    """One inode of the model; hard-linked paths share the same node (same ``ino``)."""

    kind: InodeKind
    mode: int
    ino: int
    size: int = 0
    layer: int = -1  # index of the layer holding the content
    offset: int = 0  # of the content in that layer's tar
    target: str = ""
    rdev: tuple[int, int] = (0, 0)


def _sort_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def escapes(directory: Sequence[str], target: str) -> bool:
    """True when ``target`` (a link in ``directory``) climbs above the root, read lexically."""
    depth = 0 if target.startswith("/") else len(directory)
    for part in treepath.split(target):
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return True
    return False


class _FileRange(io.RawIOBase):
    """``size`` bytes of a file from ``offset``: one file's content inside a layer tar."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._fh.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(memoryview(buffer)[:n])
        self._left -= got
        return got

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_slice(path: Path, offset: int, size: int) -> IO[bytes]:
    return io.BufferedReader(_FileRange(path, offset, size), CHUNK)


class Rootfs:
    """The merged filesystem of a list of layers: path → :class:`Inode` (the root itself excluded)."""

    def __init__(self, layers: Sequence[LayerFile]) -> None:
        self.layers = tuple(layers)
        self.nodes: dict[str, Inode] = {}
        self._children: dict[str, set[str]] = {"": set()}
        self._next_ino = 0
        for number, layer in enumerate(self.layers):
            _LayerApplier(self, number, layer).run()

    # -- tree edits ------------------------------------------------------------------------------
    def new_ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def kind_of(self, path: str) -> InodeKind | None:
        if not path:
            return "dir"
        node = self.nodes.get(path)
        return None if node is None else node.kind

    def put(self, path: str, node: Inode) -> None:
        old = self.nodes.get(path)
        if old is not None and not (old.kind == "dir" and node.kind == "dir"):
            self.remove(path)
        self.nodes[path] = node
        self._children[_parent(path)].add(path)
        if node.kind == "dir":
            self._children.setdefault(path, set())

    def remove(self, path: str) -> None:
        """Drop ``path`` and everything below it."""
        del self.nodes[path]
        self._children[_parent(path)].discard(path)
        stack = list(self._children.pop(path, ()))
        while stack:
            child = stack.pop()
            del self.nodes[child]
            stack.extend(self._children.pop(child, ()))

    def children(self, path: str) -> list[str]:
        return sorted(self._children.get(path, ()))

    # -- output ----------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """cpio entries (paths relative to the rootfs, modes preserved) streaming from the layers.

        Hard-linked paths become one entry owning the content (the first path in sorted order) and
        ``hardlink`` entries for the others.
        """
        return [
            self._entry(path, node) if owner == path else Entry.hardlink(path, owner)
            for path, node, owner in self._in_order()
        ]

    def _in_order(self) -> Iterator[tuple[str, Inode, str]]:
        """(path, node, owner) in archive order; ``owner`` is the first path of the node's inode."""
        owners: dict[int, str] = {}
        for path in sorted(self.nodes, key=_sort_key):
            node = self.nodes[path]
            yield path, node, owners.setdefault(node.ino, path)

    def _entry(self, path: str, node: Inode) -> Entry:
        if node.kind == "file":
            source = functools.partial(self._open, node)
            return Entry(path, "file", node.mode, node.size, source)
        if node.kind == "symlink":
            return Entry.symlink(path, node.target)
        if node.kind in ("char", "block"):
            major, minor = node.rdev
            return Entry(path, node.kind, node.mode, rdev_major=major, rdev_minor=minor)
        return Entry(path, node.kind, node.mode)

    def unpack(self, dest: Path, *, preserve_special: bool = False) -> Unpacked:
        """Write the tree into ``dest`` (new or empty); return what was written and left out.

        Every path goes through the one safe tree writer (no symlink followed, for any parent or
        the last component). Device nodes and setuid/setgid bits only with ``preserve_special``
        (else they are listed as skipped); a device node without root becomes an empty file (like
        umoci's rootless mode) and a warning says so.
        """
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            msg = "unpack target is not empty"
            raise ArchiveError(msg, path=dest)
        dirs: list[tuple[str, int]] = []
        with TreeWriter(dest, preserve_special=preserve_special) as writer:
            try:
                for path, node, owner in self._in_order():
                    if owner != path:
                        writer.link(path, owner)
                    elif node.kind == "dir":
                        writer.mkdir(path, 0o700)
                        dirs.append((path, node.mode))
                    else:
                        self._unpack_node(writer, path, node)
                for path, mode in reversed(dirs):  # last, so a read-only dir does not block its children
                    writer.chmod(path, mode)
            except UnsafePathError as exc:
                raise ArchiveError(str(exc), path=dest) from None
        return Unpacked(len(self.nodes), tuple(writer.skipped))

    def _unpack_node(self, writer: TreeWriter, path: str, node: Inode) -> None:
        if node.kind == "symlink":
            writer.symlink(path, node.target)
            return
        if node.kind == "file":
            with self._open(node) as src:
                writer.write_file(path, src, node.mode)
            return
        if node.kind == "fifo":
            writer.mkfifo(path, node.mode)
            return
        try:
            writer.device(path, node.kind, node.mode, node.rdev)
        except PermissionError:
            log.warn(f"{path}: not root: wrote an empty file for {node.kind} device {node.rdev}")
            with writer.open_file(path):
                pass
            writer.chmod(path, node.mode)

    def _open(self, node: Inode) -> IO[bytes]:
        return open_slice(self.layers[node.layer].path, node.offset, node.size)


class _LayerApplier:
    """Applies one layer tar to a :class:`Rootfs`."""

    def __init__(self, rootfs: Rootfs, number: int, layer: LayerFile) -> None:
        self.fs = rootfs
        self.number = number
        self.layer = layer
        self.upper: set[str] = set()  # paths this layer created, and their ancestors

    def error(self, message: str, member: str) -> ArchiveError:
        return ArchiveError(message, path=f"layer {self.layer.digest}", member=member)

    def run(self) -> None:
        try:
            for info in self._members():
                self.apply(info)
        except (tarfile.TarError, EOFError, UnicodeError) as exc:
            msg = f"corrupt layer tar: {exc}"
            raise ArchiveError(msg, path=f"layer {self.layer.digest}") from None

    def _members(self) -> Iterator[tarfile.TarInfo]:
        with tarfile.open(self.layer.path, "r:", encoding="utf-8", errors="surrogateescape") as tar:
            while (info := tar.next()) is not None:
                cast("Any", tar).members.clear()  # tarfile keeps every header otherwise; we need none
                yield info

    def clean(self, name: str, member: str, what: str = "path") -> list[str]:
        if name.startswith("/"):
            msg = f"absolute {what} {name!r}: layer members must be relative to the rootfs"
            raise self.error(msg, member)
        parts = treepath.split(name)
        if ".." in parts:
            msg = f"{what} {name!r} contains '..': it could reach outside the rootfs"
            raise self.error(msg, member)
        return parts

    def resolve(self, parts: Sequence[str], member: str) -> list[str]:
        """The real location of directory ``parts``: symlinks followed, scoped to the rootfs."""
        try:
            return treepath.resolve(parts, self.fs.nodes.get, create=True)
        except treepath.UnresolvablePathError as exc:
            raise self.error(str(exc), member) from None

    def mark_upper(self, path: str) -> None:
        while path and path not in self.upper:
            self.upper.add(path)
            path = _parent(path)

    def make_parents(self, parts: Sequence[str]) -> None:
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self.fs.nodes:
                self.fs.put(path, Inode("dir", _DIR_MODE, self.fs.new_ino()))

    def apply(self, info: tarfile.TarInfo) -> None:
        member = info.name
        parts = self.clean(info.name, member)
        if not parts:
            if not info.isdir():
                msg = "refusing to change the type of the rootfs root directory"
                raise self.error(msg, member)
            return
        *parent_parts, name = parts
        parent = self.resolve(parent_parts, member)
        if name.startswith(WHITEOUT):
            self.whiteout(parent, name, member)
            return
        path = "/".join([*parent, name])
        node = self.node_for(info, parent, member)
        self.make_parents(parent)
        self.fs.put(path, node)
        self.mark_upper(path)

    def node_for(self, info: tarfile.TarInfo, parent: list[str], member: str) -> Inode:
        if info.islnk():
            return self.hardlink(info, member)
        kind = _KINDS.get(info.type)
        if kind is None or info.issparse():
            what = "sparse file" if info.issparse() else f"member type {info.type!r}"
            msg = f"unsupported {what}: expected files, dirs, links, devices or fifos"
            raise self.error(msg, member)
        mode = info.mode & 0o7777
        if kind == "file":
            return Inode("file", mode, self.fs.new_ino(), info.size, self.number, info.offset_data)
        if kind == "symlink":
            if not info.linkname:
                msg = "symlink with an empty target"
                raise self.error(msg, member)
            if escapes(parent, info.linkname):
                msg = f"symlink target {info.linkname!r} points outside the rootfs"
                raise self.error(msg, member)
            return Inode("symlink", 0o777, self.fs.new_ino(), target=info.linkname)
        rdev = (info.devmajor, info.devminor) if kind in ("char", "block") else (0, 0)
        return Inode(kind, mode, self.fs.new_ino(), rdev=rdev)

    def hardlink(self, info: tarfile.TarInfo, member: str) -> Inode:
        parts = self.clean(info.linkname, member, "hard link target")
        if not parts:
            msg = "hard link to the rootfs root directory"
            raise self.error(msg, member)
        *dir_parts, name = parts
        path = "/".join([*self.resolve(dir_parts, member), name])
        node = self.fs.nodes.get(path)
        if node is None:
            msg = f"hard link to {info.linkname!r}, which does not exist in this or a lower layer"
            raise self.error(msg, member)
        if node.kind == "dir":
            msg = f"hard link to directory {info.linkname!r}"
            raise self.error(msg, member)
        return node

    def whiteout(self, parent: list[str], name: str, member: str) -> None:
        dir_path = "/".join(parent)
        if name == OPAQUE:
            if self.fs.kind_of(dir_path) == "dir":
                self.wipe(dir_path, keep_top=True)
            return
        if name.startswith(OPAQUE[:8]):  # other .wh..wh.* names are AUFS metadata: ignored
            return
        target = name[len(WHITEOUT) :]
        if target in ("", ".", ".."):
            msg = f"malformed whiteout {name!r}"
            raise self.error(msg, member)
        path = f"{dir_path}/{target}" if dir_path else target
        if path in self.fs.nodes:
            self.wipe(path, keep_top=False)

    def wipe(self, path: str, *, keep_top: bool) -> None:
        """Remove ``path`` (or only its children) except what this layer itself created."""
        stack = [path]
        while stack:
            cur = stack.pop()
            if cur in self.upper or (keep_top and cur == path):
                stack.extend(self.fs.children(cur))
                continue
            self.fs.remove(cur)
