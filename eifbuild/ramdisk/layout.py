"""Ramdisk inputs (directory walk, explicit mappings) and the two layouts AWS's init.c expects.

Everything here returns lists of :class:`~eifbuild.ramdisk.newc.Entry`;
:func:`eifbuild.ramdisk.newc.write_cpio` turns them into bytes. Layouts (README, "Ramdisks"):

- bootstrap ("sys") ramdisk: ``dev/`` (0755), ``init`` (0755), optional ``nsm.ko`` (0755). init
  loads ``/nsm.ko`` by that exact name and skips it when missing;
- app ("user") ramdisk: ``cmd`` and ``env`` (0644) at the top, the app tree under ``rootfs/``, and
  ``rootfs/{dev,proc,run,sys,tmp,var}`` created when missing (init mounts onto them and dies
  without them). ``cmd`` holds one argv entry per line, ``env`` one ``KEY=value`` per line, each
  line ending in a newline: init.c reads them with getline and strips only that newline.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import stat
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Final, Literal, NamedTuple, Union, get_args

from .. import log
from ..errors import ArchiveError, FileAccessError, InputError, UsageError
from ..util import treepath
from .newc import Entry, check_path
from .reader import CpioMember, read_cpio

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

Modes = Literal["normalize", "preserve"]
MODES: Final = frozenset(get_args(Modes))
_STICKY_SHARED: Final = stat.S_ISVTX | stat.S_IWOTH  # /tmp: anyone may create, only owners delete
# The directories init.c mounts on inside /rootfs (var: nitro-cli adds it too).
ROOTFS_DIRS: Final = ("dev", "proc", "run", "sys", "tmp", "var")
# execvpe(argv[0]) searches this PATH, which init.c sets for itself whatever /env says.
INIT_PATH: Final = ("sbin", "usr/sbin", "bin", "usr/bin")
_UTF8_FS: Final = sys.getfilesystemencoding().lower() in {"utf-8", "utf8"}


@dataclass(frozen=True, slots=True)
class Symlink:
    """A symlink in an explicit mapping (a plain ``str`` value there means a host file)."""

    target: str


# What an explicit mapping may give for an archive path: content bytes, a host file (or a host
# directory, packed below that path), a symlink, or a ready Entry.
Spec = Union[bytes, str, "os.PathLike[str]", Symlink, Entry]


# ---------------------------------------------------------------------------------------------------
# directory walk


class ScannedFile(NamedTuple):
    """One object below a walked root: its relative archive path, host path and lstat result."""

    path: str
    host: str
    stat: os.stat_result


def _archive_name(name: str) -> str:
    return name if _UTF8_FS else os.fsencode(name).decode("utf-8", "surrogateescape")


def _children(host: str, rel: str) -> list[ScannedFile]:
    try:
        with os.scandir(host) as it:
            items = [(d.name, d.path, d.stat(follow_symlinks=False)) for d in it]
    except OSError as exc:
        msg = f"cannot read directory: {exc.strerror}"
        raise ArchiveError(msg, path=exc.filename or host) from None
    items.sort()
    prefix = f"{rel}/" if rel else ""
    return [ScannedFile(prefix + _archive_name(name), path, st) for name, path, st in items]


def _root_stat(root: str | os.PathLike[str]) -> os.stat_result:
    try:
        st = os.lstat(root)
    except OSError as exc:
        msg = f"cannot read tree: {exc.strerror}"
        raise ArchiveError(msg, path=os.fspath(root)) from None
    if not stat.S_ISDIR(st.st_mode):
        msg = "expected a directory to pack"
        raise ArchiveError(msg, path=os.fspath(root))
    return st


def scan_tree(root: str | os.PathLike[str]) -> Iterator[ScannedFile]:
    """Everything below ``root`` (not root itself), depth first, siblings sorted by name.

    Uses os.scandir and lstat: symlinks are reported, never followed. The order is a function of
    the names alone, so callers can fingerprint a tree from this sequence (path, size, mtime, mode).
    """
    host = os.fspath(root)
    _root_stat(host)
    yield from _walk(host)


def _walk(host: str) -> Iterator[ScannedFile]:
    """:func:`scan_tree` of a root already known to be a directory."""
    stack = [iter(_children(host, ""))]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        yield item
        if stat.S_ISDIR(item.stat.st_mode):
            stack.append(iter(_children(item.host, item.path)))


def normalized_mode(st_mode: int) -> int:
    """``normalize`` policy: the canonical modes (dirs 0755, symlinks 0777, anything else 0755 with
    any x bit, else 0644), but group and other never get a bit they did not have: a private file
    (``/etc/shadow`` 0640) stays private and a umask's group write goes. The owner (root, in the
    enclave) gets the canonical bits. Setuid and setgid are kept, and a world-writable sticky
    directory (``/tmp`` 1777) keeps its mode."""
    if stat.S_ISLNK(st_mode):
        return 0o777
    perm = st_mode & 0o7777
    if stat.S_ISDIR(st_mode):
        if perm & _STICKY_SHARED == _STICKY_SHARED:
            return perm
        return 0o700 | perm & 0o6055  # canonical 0755: owner rwx, group and other only what they had
    if perm & 0o111:
        return 0o700 | perm & 0o6055
    return 0o600 | perm & 0o6044  # canonical 0644


def kept_private(st_mode: int) -> bool:
    """``normalize`` left group or other without a bit the canonical mode has."""
    return _narrower(normalized_mode(st_mode))


def _narrower(mode: int) -> bool:
    """A normalized ``mode`` lacks a group or other bit of its canonical mode (0755 where the owner
    may execute, else 0644; a symlink's 0777 never does)."""
    canonical_others = 0o055 if mode & 0o100 else 0o044
    return mode & canonical_others != canonical_others


def _mode(st_mode: int, modes: Modes) -> int:
    return normalized_mode(st_mode) if modes == "normalize" else stat.S_IMODE(st_mode)


def _entry_for(path: str, item: ScannedFile, modes: Modes) -> Entry | None:
    st = item.stat
    fmt = stat.S_IFMT(st.st_mode)
    mode = _mode(st.st_mode, modes)
    if fmt == stat.S_IFREG:
        return Entry(path, "file", mode, st.st_size, item.host)
    if fmt == stat.S_IFDIR:
        return Entry(path, "dir", mode)
    if fmt == stat.S_IFLNK:
        return Entry(path, "symlink", 0o777, target=os.readlink(item.host))
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        kind: Literal["char", "block"] = "char" if fmt == stat.S_IFCHR else "block"
        return Entry(path, kind, mode, rdev_major=os.major(st.st_rdev), rdev_minor=os.minor(st.st_rdev))
    if fmt == stat.S_IFIFO:
        return Entry(path, "fifo", mode)
    log.warn(f"{item.host}: skipped: a cpio archive cannot hold a {'socket' if stat.S_ISSOCK(fmt) else fmt}")
    return None


def iter_tree(
    root: str | os.PathLike[str], *, modes: Modes = "normalize", prefix: str = ""
) -> Iterator[Entry]:
    """Yield the entries of the tree at ``root`` in :func:`scan_tree` order (the writer sorts).

    With ``prefix`` the tree goes below that archive path (whose entry comes first). Files keep
    their host path as content source, read at write time. Hard links are found by (st_dev, st_ino)
    inside the tree: the first one seen is the file, later ones link to it. Sockets are skipped with
    a warning.
    """
    _check_modes(modes)
    yield from _tree(os.fspath(root), _root_stat(root), modes, prefix)


def _check_modes(modes: Modes) -> None:
    if modes not in MODES:
        msg = f"unknown modes policy {modes!r}: expected normalize or preserve"
        raise UsageError(msg)


def _tree(host: str, root_st: os.stat_result, modes: Modes, prefix: str) -> Iterator[Entry]:
    """:func:`iter_tree` once the root's lstat (``root_st``) and ``modes`` are checked."""
    normalize = modes == "normalize"
    if prefix:  # the tree's own directory: its mode is where it was made, not the tree's content
        check_path(prefix)
        yield Entry(prefix, "dir", 0o755 if normalize else stat.S_IMODE(root_st.st_mode))
    first_link: dict[tuple[int, int], str] = {}
    private: list[str] = []
    for item in _walk(host):
        path = f"{prefix}/{item.path}" if prefix else item.path
        st = item.stat
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in first_link:
                yield Entry.hardlink(path, first_link[key])
                continue
            first_link[key] = path
        try:
            entry = _entry_for(path, item, modes)
        except OSError as exc:
            msg = f"cannot read: {exc.strerror}"
            raise ArchiveError(msg, path=item.host) from None
        if entry is not None:
            if normalize and _narrower(entry.mode):
                private.append(path)
            yield entry
    if private:
        _warn_private(host, private)


def _warn_private(host: str, private: list[str]) -> None:
    shown = ", ".join(private[:3]) + (f" and {len(private) - 3} more" if len(private) > 3 else "")
    log.warn(
        f"{host}: modes normalize kept {len(private)} entries narrower than 0644/0755 ({shown}): "
        "right for private files; a checkout under a umask like 077 gives other modes (and PCRs) "
        "than one under 022"
    )


def tree_entries(
    root: str | os.PathLike[str], *, modes: Modes = "normalize", prefix: str = ""
) -> list[Entry]:
    """:func:`iter_tree` as a list."""
    return list(iter_tree(root, modes=modes, prefix=prefix))


# ---------------------------------------------------------------------------------------------------
# explicit mappings and entry-list helpers


def _spec_entries(path: str, spec: Spec, modes: Modes) -> list[Entry]:
    if isinstance(spec, Entry):
        if spec.path != path:
            msg = f"mapping key {path!r} holds an entry for {spec.path!r}"
            raise ArchiveError(msg, member=path)
        return [spec]
    if isinstance(spec, Symlink):
        return [Entry.symlink(path, spec.target)]
    if isinstance(spec, bytes):
        return [Entry.file(path, spec)]
    try:
        st = os.stat(spec)
    except OSError as exc:
        msg = f"cannot read source: {exc.strerror}"
        raise ArchiveError(msg, path=os.fspath(spec), member=path) from None
    if stat.S_ISDIR(st.st_mode):
        return tree_entries(spec, modes=modes, prefix=path)
    if not stat.S_ISREG(st.st_mode):
        msg = "source is not a regular file or directory"
        raise ArchiveError(msg, path=os.fspath(spec), member=path)
    return [Entry(path, "file", _mode(st.st_mode, modes), st.st_size, spec)]


def mapping_entries(mapping: Mapping[str, Spec], *, modes: Modes = "normalize") -> list[Entry]:
    """Entries for an explicit ``archive path → spec`` mapping, plus any missing parent dirs (0755)."""
    entries: list[Entry] = []
    for path, spec in mapping.items():
        check_path(path)
        entries.extend(_spec_entries(path, spec, modes))
    return add_parents(entries)


def add_parents(entries: Iterable[Entry], *, mode: int = 0o755) -> list[Entry]:
    """``entries`` plus a directory entry for every parent path that has none."""
    result = list(entries)
    _add_parents(result, {e.path: e for e in result}, mode)
    return result


def _add_parents(entries: list[Entry], by_path: dict[str, Entry], mode: int = 0o755) -> None:
    """Append to ``entries`` (and index in ``by_path``) a directory for every missing parent."""
    for entry in list(entries):
        parent = entry.path.rpartition("/")[0]
        while parent and parent not in by_path:
            directory = Entry.directory(parent, mode=mode)
            by_path[parent] = directory
            entries.append(directory)
            parent = parent.rpartition("/")[0]


def prefixed(entries: Iterable[Entry], prefix: str) -> list[Entry]:
    """The same entries moved below ``prefix`` (hard-link targets move along)."""
    check_path(prefix)
    return [
        dataclasses.replace(
            e, path=f"{prefix}/{e.path}", link_to=f"{prefix}/{e.link_to}" if e.link_to else ""
        )
        for e in entries
    ]


def overlay(base: Iterable[Entry], extra: Iterable[Entry]) -> list[Entry]:
    """``base`` with ``extra`` added; an extra entry replaces a base entry of the same path."""
    result = {e.path: e for e in base}
    for entry in extra:
        old = result.get(entry.path)
        if old is not None and old.kind == "dir" and entry.kind != "dir":
            msg = f"cannot replace a directory with a {entry.kind}"
            raise ArchiveError(msg, member=entry.path)
        result[entry.path] = entry
    return list(result.values())


# ---------------------------------------------------------------------------------------------------
# cmd / env


def _check_line(value: str, key: str, file: str) -> None:
    for char, what in (("\n", "a newline"), ("\0", "a NUL byte")):
        if char in value:
            msg = (
                f"value {value!r} contains {what}: init.c reads /{file} one entry per line and would split it"
            )
            raise InputError(msg, key=key)


def encode_cmd(cmd: Sequence[str]) -> bytes:
    """``/cmd``: argv, one entry per line, each ending in a newline."""
    if isinstance(cmd, str) or not cmd:
        msg = "expected a list holding at least the program to run (an empty /cmd makes init.c run 'sh')"
        raise InputError(msg, key="cmd")
    if not cmd[0]:
        msg = "empty program name"
        raise InputError(msg, key="cmd[0]")
    for i, arg in enumerate(cmd):
        _check_line(arg, f"cmd[{i}]", "cmd")
    return "".join(f"{arg}\n" for arg in cmd).encode("utf-8", "surrogateescape")


def encode_env(env: Mapping[str, str] | Sequence[str]) -> bytes:
    """``/env``: one ``KEY=value`` per line; a mapping is written in sorted key order, a list as is.

    This is the app's whole environment. An empty env makes init.c fall back to
    ``PATH=/sbin:/usr/sbin:/bin:/usr/bin`` only.
    """
    if isinstance(env, str):
        msg = "expected a mapping or a list of KEY=value strings, got a string"
        raise InputError(msg, key="env")
    if isinstance(env, Mapping):
        items = [(f"env.{k}", f"{k}={v}") for k, v in sorted(env.items())]
    else:
        items = [(f"env[{i}]", item) for i, item in enumerate(env)]
    for key, item in items:
        name, sep, _ = item.partition("=")
        if not sep or not name:
            msg = f"entry {item!r}: expected KEY=value with a non-empty KEY"
            raise InputError(msg, key=key)
        _check_line(item, key, "env")
    return "".join(f"{item}\n" for _, item in items).encode("utf-8", "surrogateescape")


def parse_env_args(items: Iterable[str]) -> dict[str, str]:
    """``["K=V", …]`` from the command line as a mapping; a repeated key is an error."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            msg = f"--env {item!r}: expected KEY=value with a non-empty KEY"
            raise UsageError(msg)
        if name in env:
            msg = f"--env {name} given twice"
            raise UsageError(msg)
        env[name] = value
    return env


def _lookup(by_path: Mapping[str, Entry], path: str) -> Entry | None:
    """The entry ``path`` names inside the tree, resolving symlinks the way the kernel would."""
    try:
        parts = treepath.resolve(treepath.split(path), by_path.get)
    except treepath.UnresolvablePathError:
        return None
    found = by_path.get("/".join(parts)) if parts else None
    return by_path.get(found.link_to) if found is not None and found.kind == "hardlink" else found


def _check_program(by_path: Mapping[str, Entry], program: str) -> None:
    """Warn when init.c will not find ``program`` (cmd[0]) in the rootfs."""
    if "/" in program:
        if _lookup(by_path, program) is None:
            log.warn(f"cmd[0] {program!r} does not exist in the rootfs")
        return
    if not any(_lookup(by_path, f"{d}/{program}") for d in INIT_PATH):
        log.warn(
            f"cmd[0] {program!r} is not in /sbin, /usr/sbin, /bin or /usr/bin of the rootfs: init.c only"
            " searches those for a bare program name (whatever PATH /env sets); use an absolute path"
        )


# ---------------------------------------------------------------------------------------------------
# layouts


def _host_binary(path: str | os.PathLike[str] | bytes, member: str, what: str) -> Entry:
    if isinstance(path, bytes):
        return Entry.file(member, path, mode=0o755)
    try:
        st = os.stat(path)
    except OSError as exc:
        msg = f"{what}: {exc.strerror}"
        raise FileAccessError(msg, path=os.fspath(path)) from None
    if not stat.S_ISREG(st.st_mode):
        msg = f"{what}: expected a regular file"
        raise FileAccessError(msg, path=os.fspath(path))
    return Entry(member, "file", 0o755, st.st_size, path)


def bootstrap_entries(
    init: str | os.PathLike[str] | bytes, nsm: str | os.PathLike[str] | bytes | None = None
) -> list[Entry]:
    """The bootstrap ramdisk: ``dev/``, ``init`` and, when given, ``nsm.ko`` (all 0755)."""
    entries = [Entry.directory("dev"), _host_binary(init, "init", "init executable")]
    if nsm is not None:
        entries.append(_host_binary(nsm, "nsm.ko", "NSM kernel module"))
    return entries


def app_entries(
    rootfs: str | os.PathLike[str] | Iterable[Entry],
    cmd: Sequence[str],
    env: Mapping[str, str] | Sequence[str],
    *,
    modes: Modes = "normalize",
    files: Mapping[str, Spec] | None = None,
) -> list[Entry]:
    """The app ramdisk: ``cmd``, ``env``, the rootfs (a directory or entries) below ``rootfs/``.

    ``files`` adds or replaces paths inside the rootfs (generated files, compiled binaries);
    ``rootfs/{dev,proc,run,sys,tmp,var}`` are added as 0755 directories when missing.
    """
    cmd_bytes, env_bytes = encode_cmd(cmd), encode_env(env)
    root_mode = 0o755
    if isinstance(rootfs, (str, os.PathLike)):
        root_st = _root_stat(rootfs)
        root_mode = _mode(root_st.st_mode, modes)
        _check_modes(modes)
        tree = list(_tree(os.fspath(rootfs), root_st, modes, ""))
    else:
        tree = list(rootfs)
    if files:
        tree = overlay(tree, mapping_entries(files, modes=modes))
    by_path = {e.path: e for e in tree}
    _add_parents(tree, by_path)  # image layers may omit parent directories
    for name in ROOTFS_DIRS:
        found = by_path.get(name)
        if found is None:
            by_path[name] = Entry.directory(name)
            tree.append(by_path[name])
        elif found.kind == "symlink":
            log.warn(
                f"rootfs/{name} is a symlink to {found.target!r}: init.c mounts on it, so it must resolve"
            )
        elif found.kind != "dir":
            msg = f"expected a directory (init.c mounts on it), found a {found.kind}"
            raise ArchiveError(msg, member=f"rootfs/{name}")
    _check_program(by_path, cmd[0])
    return [
        Entry.file("cmd", cmd_bytes),
        Entry.file("env", env_bytes),
        Entry.directory("rootfs", mode=root_mode),
        *prefixed(tree, "rootfs"),
    ]


# ---------------------------------------------------------------------------------------------------
# listing


def _open_maybe_gzip(fh: IO[bytes]) -> gzip.GzipFile | IO[bytes]:
    magic = fh.read(2)
    fh.seek(0)
    return gzip.GzipFile(fileobj=fh, mode="rb") if magic == b"\x1f\x8b" else fh


def _listing_line(m: CpioMember) -> str:
    size = f"{m.rdev[0]}, {m.rdev[1]}" if stat.S_ISCHR(m.mode) or stat.S_ISBLK(m.mode) else str(m.size)
    when = datetime.fromtimestamp(m.mtime, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    name = m.name
    if stat.S_ISLNK(m.mode):
        name += f" -> {m.data.decode('utf-8', 'surrogateescape')}"
    return f"{stat.filemode(m.mode)} {m.nlink:>3} {m.uid:<5} {m.gid:<5} {size:>10} {when} {name}"


def list_archive(path: str | os.PathLike[str]) -> list[str]:
    """``cpio -tv``-style lines (numeric owners, UTC times) for a plain or gzip-compressed archive."""
    where = os.fspath(path)
    try:
        with open(where, "rb") as fh, _open_maybe_gzip(fh) as stream:
            members = read_cpio(stream, path=where, data=lambda m: stat.S_ISLNK(m.mode))
            return [_listing_line(m) for m in members]
    except OSError as exc:
        msg = f"cannot read archive: {exc.strerror or exc}"
        raise ArchiveError(msg, path=where) from None
    except (EOFError, zlib.error) as exc:
        msg = f"corrupt gzip stream: {exc}"
        raise ArchiveError(msg, path=where) from None
