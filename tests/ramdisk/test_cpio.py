"""The canonical newc writer: entry model, GNU cpio byte-identity, hard links, gzip, errors, reader."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import require_tool
from cpio_oracle import IS_ROOT, Node, content, gnu_archive, make_tree, trees
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eifbuild import log
from eifbuild.errors import ArchiveError, FileAccessError, UsageError
from eifbuild.ramdisk import (
    CpioMember,
    Entry,
    eif_alignment,
    read_cpio,
    tree_entries,
    write_cpio,
    write_cpio_file,
)
from eifbuild.ramdisk.newc import plan

MTIME = 1_700_000_000


def archive(entries: list[Entry], **kw: object) -> bytes:
    out = io.BytesIO()
    result = write_cpio(entries, out, **kw)  # type: ignore[arg-type]
    data = out.getvalue()
    assert result.size == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    return data


def members(data: bytes) -> list[CpioMember]:
    return list(read_cpio(io.BytesIO(data), data=True))


def listing(data: bytes) -> list[tuple[str, int, int, int, int]]:
    return [(m.name, m.ino, m.mode, m.nlink, m.size) for m in members(data)]


# ---------------------------------------------------------------------------------------------------
# byte-identity with GNU cpio


def _check_against_gnu(tmp: Path, nodes: list[Node], modes: str, seed: int) -> None:
    root = tmp / "t"
    root.mkdir()
    make_tree(root, nodes, mtimes=random.Random(seed))  # noqa: S311 - test data
    ours = archive(tree_entries(root, modes=modes), mtime=MTIME)  # type: ignore[arg-type]
    oracle = gnu_archive(root, mtime=MTIME, modes=modes)  # type: ignore[arg-type]
    assert listing(ours) == listing(oracle)
    assert ours == oracle
    # the normalised tree gives the same bytes again
    assert archive(tree_entries(root, modes=modes), mtime=MTIME) == ours  # type: ignore[arg-type]


_ORACLE = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
FEW = settings(_ORACLE, max_examples=12)  # default run: a quick smoke of the property
MANY = settings(_ORACLE, max_examples=300)  # slow run


@FEW
@given(nodes=trees(), seed=st.integers(0, 2**32))
def test_normalize_matches_gnu_cpio(tmp_path: Path, nodes: list[Node], seed: int) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        _check_against_gnu(Path(tmp), nodes, "normalize", seed)


@FEW
@given(nodes=trees(wild_modes=True), seed=st.integers(0, 2**32))
def test_preserve_matches_gnu_cpio(tmp_path: Path, nodes: list[Node], seed: int) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        _check_against_gnu(Path(tmp), nodes, "preserve", seed)


@pytest.mark.slow
@MANY
@given(
    nodes=trees(max_nodes=60, wild_modes=True),
    seed=st.integers(0, 2**32),
    modes=st.sampled_from(["normalize", "preserve"]),
)
def test_many_trees_match_gnu_cpio(tmp_path: Path, nodes: list[Node], seed: int, modes: str) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        _check_against_gnu(Path(tmp), nodes, modes, seed)


def _hardlink_tree(root: Path) -> None:
    (root / "d").mkdir()
    (root / "a").write_bytes(b"data\n")
    for name in ("b", "d/c", "e", "f"):
        os.link(root / "a", root / name)
    (root / "m").write_bytes(b"x\n")
    os.link(root / "m", root / "d" / "m2")
    (root / "empty").write_bytes(b"")
    os.link(root / "empty", root / "empty2")
    (root / "s").symlink_to("nowhere")
    os.link(root / "s", root / "s2", follow_symlinks=False)


def test_hardlink_rule_matches_gnu_cpio(tmp_path: Path) -> None:
    """GNU defers all but the last link of a file and writes them in reverse before it."""
    _hardlink_tree(tmp_path)
    ours = archive(tree_entries(tmp_path, modes="preserve"), mtime=MTIME)
    assert [(n, ino, nlink, size) for n, ino, _, nlink, size in listing(ours)] == [
        ("d", 1, 2, 0),
        ("empty", 3, 2, 0),  # held back until empty2, written first, size 0
        ("empty2", 3, 2, 0),
        ("e", 0, 5, 0),  # a, b, d/c, e held back; written in reverse before f
        ("d/c", 0, 5, 0),
        ("b", 0, 5, 0),
        ("a", 0, 5, 0),
        ("f", 0, 5, 5),  # the last link carries the data
        ("d/m2", 2, 2, 0),
        ("m", 2, 2, 2),
        ("s", 4, 2, 7),  # hard-linked symlinks: in place, each with its target
        ("s2", 4, 2, 7),
    ]
    assert ours == gnu_archive(tmp_path, mtime=MTIME)


@pytest.mark.skipif(not IS_ROOT, reason="mknod of device nodes needs root")
def test_devices_fifos_and_special_bits_match_gnu_cpio(tmp_path: Path) -> None:
    os.mknod(tmp_path / "console", 0o600 | 0o020000, os.makedev(5, 1))
    os.mknod(tmp_path / "sda1", 0o640 | 0o060000, os.makedev(8, 1))
    os.mknod(tmp_path / "big", 0o644 | 0o020000, os.makedev(300, 70000))
    os.link(tmp_path / "console", tmp_path / "console2")
    os.mkfifo(tmp_path / "fifo", 0o620)
    (tmp_path / "tmp").mkdir()
    os.chmod(tmp_path / "tmp", 0o1777)  # noqa: S103 - special bits on purpose
    (tmp_path / "su").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "su", 0o4755)  # noqa: S103 - special bits on purpose
    (tmp_path / "sg").mkdir()
    os.chmod(tmp_path / "sg", 0o2750)  # noqa: S103 - special bits on purpose
    ours = archive(tree_entries(tmp_path, modes="preserve"), mtime=MTIME)
    assert ours == gnu_archive(tmp_path, mtime=MTIME)
    big = next(m for m in members(ours) if m.name == "big")
    assert (big.rdev, big.mode) == ((300, 70000), 0o20644)


def test_explicit_entries_match_gnu_cpio(tmp_path: Path) -> None:
    """Entries that come from no host file (bytes, streams) archive like the same tree on disk."""
    payload = bytes(range(256)) * 4099
    entries = [
        Entry.directory("bin"),
        Entry.file("bin/tool", payload, mode=0o755),
        Entry.file("data", lambda: io.BytesIO(b"streamed\n"), size=9, mode=0o600),
        Entry.symlink("sh", "bin/tool"),
        Entry.hardlink("bin/tool2", "bin/tool"),
        Entry.directory("empty", mode=0o700),
    ]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_bytes(payload)
    os.chmod(tmp_path / "bin" / "tool", 0o755)  # noqa: S103
    os.link(tmp_path / "bin" / "tool", tmp_path / "bin" / "tool2")
    (tmp_path / "data").write_bytes(b"streamed\n")
    os.chmod(tmp_path / "data", 0o600)
    (tmp_path / "sh").symlink_to("bin/tool")
    (tmp_path / "empty").mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)  # noqa: S103
    os.chmod(tmp_path / "bin", 0o755)  # noqa: S103
    assert archive(entries, mtime=MTIME) == gnu_archive(tmp_path, mtime=MTIME)


def _build_variant(root: Path, nodes: list[Node], *, umask: int, reverse: bool, seed: int) -> bytes:
    """The same tree as created by a tool under ``umask``, in another order, with other mtimes."""
    root.mkdir()
    order = list(nodes)
    if reverse:  # siblings in reverse order, parents still before children, links after targets
        order.sort(key=lambda n: (n.path.count(b"/"), [-b for b in n.path]))
        order = [n for n in order if n.kind != "hardlink"] + [n for n in order if n.kind == "hardlink"]
    as_created = [
        Node(
            n.path,
            n.kind,
            (0o777 if n.kind == "dir" else 0o666 | n.mode & 0o111) & ~umask,
            n.size,
            n.seed,
            n.target,
        )
        for n in order
    ]
    old = os.umask(umask)
    try:
        make_tree(root, as_created, mtimes=random.Random(seed))  # noqa: S311 - test data
    finally:
        os.umask(old)
    return archive(tree_entries(root), mtime=MTIME)


@settings(_ORACLE, max_examples=10)
@given(nodes=trees(max_nodes=15))
def test_umask_creation_order_and_mtimes_do_not_matter(tmp_path: Path, nodes: list[Node]) -> None:
    """Umasks that only take write bits away (022, 002, 000) give the same archive; one that takes
    read bits (077) does not, since normalize never gives group or other a bit they lacked (a
    private file stays private, issue #27): such a tree is built as it is, with a warning."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        a = _build_variant(Path(tmp) / "a", nodes, umask=0o022, reverse=False, seed=1)
        b = _build_variant(Path(tmp) / "b", nodes, umask=0o000, reverse=True, seed=2)
        c = _build_variant(Path(tmp) / "c", nodes, umask=0o002, reverse=False, seed=3)
    assert a == b == c


def test_extraction_round_trip_with_gnu_cpio(tmp_path: Path) -> None:
    require_tool("cpio")
    src = tmp_path / "src"
    src.mkdir()
    nodes = [
        Node(b"etc", "dir", 0o755),
        Node(b"etc/conf", "file", 0o644, 513, 7),
        Node(b"bin", "dir", 0o755),
        Node(b"bin/app", "file", 0o755, 1 << 20, 9),
        Node(b"bin/app-link", "hardlink", target=b"bin/app"),
        Node(b"sp ace \xc3\xbc", "file", 0o644, 0, 0),
        Node(b"lnk", "symlink", target=b"bin/app"),
        Node(b"dangling", "symlink", target=b"/nowhere"),
        Node(b"empty", "dir", 0o755),
    ]
    make_tree(src, nodes)
    data = archive(tree_entries(src), mtime=MTIME)
    dest = tmp_path / "dest"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=dest, check=True)
    assert sorted(os.listdir(os.fsencode(dest))) == sorted(os.listdir(os.fsencode(src)))
    for node in nodes:
        p = os.path.join(os.fsencode(dest), node.path)
        st = os.lstat(p)
        if node.kind == "symlink":
            assert os.readlink(p) == node.target
            continue
        if node.kind == "dir":  # GNU cpio -idm does not restore directory mtimes (children touch them)
            assert st.st_mode & 0o7777 == 0o755
            continue
        assert st.st_mtime == MTIME
        if node.kind == "file":
            assert st.st_mode & 0o7777 == node.mode
            with open(p, "rb") as fh:
                assert fh.read() == content(node)
    assert os.lstat(dest / "bin/app").st_ino == os.lstat(dest / "bin/app-link").st_ino


# ---------------------------------------------------------------------------------------------------
# layout of the bytes (no oracle needed)


def test_pinned_small_archive() -> None:
    """A tiny archive byte for byte (checked against GNU cpio 2.13 when written)."""
    data = archive([Entry.directory("dev"), Entry.file("init", b"#!\n", mode=0o755)], mtime=1)
    assert len(data) == 512
    assert data[:110] == b"070701" + b"".join(
        b"%08X" % v for v in (0, 0o40755, 0, 0, 2, 1, 0, 0, 0, 0, 0, 4, 0)
    )
    assert data[110:116] == b"dev\0\0\0"
    assert (
        hashlib.sha256(data).hexdigest() == "ff33364c55eaf08b0100df9751d0d432ab687f9b40d6623cd954014327831de0"
    )


def test_order_inodes_and_directory_nlink() -> None:
    entries = [
        Entry.file("a/b/f", b"x"),
        Entry.directory("a/b"),
        Entry.directory("a"),
        Entry.file("a-x", b""),
        Entry.directory("a/c"),
        Entry.directory("a/b/d"),
    ]
    assert [(n, ino, nlink) for n, ino, _, nlink, _ in listing(archive(entries, mtime=0))] == [
        ("a", 0, 4),
        ("a-x", 1, 1),  # '-' (0x2d) sorts before '/' (0x2f): bytewise, not per directory
        ("a/b", 2, 3),
        ("a/b/d", 3, 2),
        ("a/b/f", 4, 1),
        ("a/c", 5, 2),
    ]


def test_trailer_and_512_padding() -> None:
    data = archive([Entry.file("f", b"abc")], mtime=5)
    assert len(data) % 512 == 0
    end = data.index(b"TRAILER!!!")
    trailer = data[end - 110 : end]
    assert trailer == b"070701" + b"".join(b"%08X" % v for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0))
    assert set(data[end + 12 :]) == {0}


def test_mtime_defaults_to_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [Entry.file("f", b"abc")]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert members(archive(entries))[0].mtime == 1234
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert members(archive(entries))[0].mtime == 0


def test_symlink_mode_is_always_0777_and_hardlinks_take_the_target_mode() -> None:
    entries = [
        Entry("l", "symlink", 0o755, target="x"),
        Entry.file("f", b"1", mode=0o4711),
        Entry("g", "hardlink", 0o600, link_to="f"),
    ]
    got = {m.name: m.mode for m in members(archive(entries))}
    assert got == {"l": 0o120777, "f": 0o104711, "g": 0o104711}


def test_hardlink_chain_and_link_before_its_target() -> None:
    entries = [Entry.hardlink("a", "z"), Entry.hardlink("m", "a"), Entry.file("z", b"zz")]
    assert [(n, ino, nlink, size) for n, ino, _, nlink, size in listing(archive(entries))] == [
        ("m", 0, 3, 0),
        ("a", 0, 3, 0),
        ("z", 0, 3, 2),
    ]


def test_streams_are_read_in_bounded_chunks_and_closed() -> None:
    reads: list[int] = []
    closed: list[bool] = []

    class Stream:
        def __init__(self, size: int) -> None:
            self.left = size

        def read(self, n: int = -1, /) -> bytes:
            reads.append(n)
            n = min(n, self.left)
            self.left -= n
            return b"\xab" * n

        def close(self) -> None:
            closed.append(True)

    size = 5 * (1 << 20) + 3
    sink = hashlib.sha256()

    class Out:
        def write(self, b: bytes | bytearray | memoryview, /) -> int:
            sink.update(b)
            return len(b)

    result = write_cpio([Entry.file("big", lambda: Stream(size), size=size)], Out(), mtime=0)
    assert result.sha256 == sink.hexdigest()
    assert max(reads) <= (1 << 20) + 1
    assert closed == [True]
    assert result.size > size


def test_gzip_is_deterministic_and_decompresses_to_the_raw_archive() -> None:
    entries = [Entry.directory("dev"), Entry.file("init", os.urandom(70000), mode=0o755)]
    raw = archive(entries, mtime=0)
    gz = archive(entries, mtime=0, compression="gzip")
    assert gz == archive(entries, mtime=0, compression="gzip")
    assert gz[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown
    assert gzip.decompress(gz) == raw
    padded = archive(entries, mtime=0, compression="gzip", align=4)
    assert len(padded) % 4 == 0
    assert padded[: len(gz)] == gz
    assert set(padded[len(gz) :]) <= {0}
    assert gzip.decompress(padded) == raw  # zero padding after a member is allowed


def test_eif_alignment() -> None:
    assert eif_alignment(["none", "none"]) == 1
    assert eif_alignment(["none", "gzip"]) == 4
    assert eif_alignment([]) == 1


def test_write_cpio_file_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "out.cpio"
    out.write_bytes(b"old")
    bad = Entry.file("f", tmp_path / "missing", size=3)
    with pytest.raises(ArchiveError):
        write_cpio_file([bad], out)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.cpio"]
    result = write_cpio_file([Entry.file("f", b"new")], out, mtime=0)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256


# ---------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "member '': archive path is empty or contains a NUL byte"),
        (
            "/etc/passwd",
            "member '/etc/passwd': archive path escapes the archive root: expected a relative path without '..'",
        ),
        (
            "a/../../x",
            "member 'a/../../x': archive path escapes the archive root: expected a relative path without '..'",
        ),
        (
            "./a",
            "member './a': archive path is not normalised: expected 'a/b' without empty or '.' components",
        ),
        (
            "a//b",
            "member 'a//b': archive path is not normalised: expected 'a/b' without empty or '.' components",
        ),
        ("a/", "member 'a/': archive path is not normalised: expected 'a/b' without empty or '.' components"),
        ("a\0b", "member 'a\\x00b': archive path is empty or contains a NUL byte"),
    ],
)
def test_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        Entry.directory(path)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Entry("f", "file", 0o644, 3, b"ab"),
            "member 'f': declared size 3 but the content has 2 bytes",
        ),
        (
            lambda: Entry("f", "file", 0o10000, 0, b""),
            "member 'f': mode 0o10000 out of range: expected permission bits within 0o7777",
        ),
        (lambda: Entry("f", "file"), "member 'f': file entry without a content source"),
        (
            lambda: Entry("f", "sock"),  # type: ignore[arg-type]
            "member 'f': unknown entry kind 'sock': expected one of block, char, dir, fifo, file, hardlink, symlink",
        ),
        (lambda: Entry.symlink("l", ""), "member 'l': symlink entry needs a non-empty, NUL-free target"),
        (lambda: Entry.hardlink("l", "l"), "member 'l': hard link points to itself"),
        (
            lambda: Entry.hardlink("l", "../x"),
            "member 'l': hard link target '../x': archive path escapes the archive root: expected a relative path without '..'",
        ),
        (
            lambda: Entry.file("f", io.BytesIO),
            "member 'f': a streamed file entry needs its size declared",
        ),
        (
            lambda: Entry("f", "file", 0o644, 2**32, io.BytesIO),
            "member 'f': size 4294967296 out of range for newc: expected 0..4294967295",
        ),
    ],
)
def test_bad_entries(make: object, message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        make()  # type: ignore[operator]
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry.file("a/f", b"")], "member 'a/f': parent directory 'a' is not in the archive"),
        (
            [Entry.file("a", b""), Entry.file("a/f", b"")],
            "member 'a/f': parent 'a' is a file, expected a directory",
        ),
        ([Entry.file("a", b""), Entry.file("a", b"x")], "member 'a': duplicate archive path"),
        ([Entry.hardlink("a", "b")], "member 'a': hard link to 'b', which is not in the archive"),
        ([Entry.hardlink("a", "b"), Entry.hardlink("b", "a")], "member 'a': hard links form a cycle"),
        ([Entry.directory("d"), Entry.hardlink("a", "d")], "member 'a': hard link to directory 'd'"),
    ],
)
def test_bad_entry_lists(entries: list[Entry], message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        plan(entries)
    assert str(exc.value) == message


def test_bad_write_parameters() -> None:
    with pytest.raises(
        UsageError,
        match=r"^mtime -1 out of range for newc: expected 0\.\.4294967295 seconds since the epoch$",
    ):
        write_cpio([], io.BytesIO(), mtime=-1)
    with pytest.raises(UsageError, match=r"^unknown compression 'xz': expected one of gzip, none$"):
        write_cpio([], io.BytesIO(), compression="xz")  # type: ignore[arg-type]


def test_content_that_changed_size_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    entry = Entry.file("f", f)
    f.write_bytes(b"123")
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert str(exc.value) == f"{f}, member 'f': content is 3 bytes, expected 5 (changed while archiving?)"
    f.write_bytes(b"1234567")
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert (
        str(exc.value)
        == f"{f}, member 'f': content is longer than the expected 5 bytes (changed while archiving?)"
    )
    with pytest.raises(ArchiveError, match=r"^member 's': content is longer than the expected 1 bytes"):
        archive([Entry.file("s", lambda: io.BytesIO(b"xx"), size=1)])


def test_unreadable_source_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "gone"
    f.write_bytes(b"x")
    entry = Entry.file("gone", f)
    f.unlink()
    f.mkdir()  # now a directory: open() works on Linux but read() fails with EISDIR
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert str(exc.value) == f"{f}, member 'gone': cannot read source file: Is a directory"
    f.rmdir()
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert str(exc.value) == f"{f}, member 'gone': cannot read source file: No such file or directory"

    def fail() -> io.BytesIO:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(
        ArchiveError, match=r"^member 's': cannot open content: \[Errno 13\] Permission denied$"
    ):
        archive([Entry.file("s", fail, size=1)])


def test_output_failure_is_reraised() -> None:
    class Full:
        def write(self, b: bytes | bytearray | memoryview, /) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        write_cpio([Entry.file("f", b"x" * (3 << 20))], Full())


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
@pytest.mark.parametrize("content", ["stream", "host-file"])
def test_a_full_disk_is_the_output_s_error_not_the_input_s(tmp_path: Path, content: str) -> None:
    """The output's write fails while a member's content is being copied (as an OCI layer member or
    a large rootfs file streams): the error is the output's, not "cannot read" the member."""
    data = b"x" * (32 << 20)  # many chunks: the writer's failure meets the copy, not the final close
    (tmp_path / "big").write_bytes(data)
    if content == "stream":
        entry = Entry.file("big", lambda: io.BytesIO(data), size=len(data))
    else:
        entry = Entry.file("big", tmp_path / "big", size=len(data))
    with (
        open("/dev/full", "wb", buffering=0) as full,
        pytest.raises(OSError, match="No space left on device") as exc,
    ):
        write_cpio([entry], full)
    assert not isinstance(exc.value, ArchiveError)


def test_output_and_stream_errors_are_archive_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    target = tmp_path / "file" / "out.cpio"
    with pytest.raises(FileAccessError) as exc:
        write_cpio_file([Entry.file("f", b"x")], target)
    assert str(exc.value) == f"{target}: cannot write archive: File exists"

    class Broken:
        def read(self, n: int = -1, /) -> bytes:
            raise OSError(5, "Input/output error")

        def close(self) -> None:
            pass

    with pytest.raises(ArchiveError) as exc:
        archive([Entry.file("s", Broken, size=3)])
    assert str(exc.value) == "member 's': cannot read content: [Errno 5] Input/output error"


# ---------------------------------------------------------------------------------------------------
# reader


def test_reader_round_trip_and_gnu_archives(tmp_path: Path) -> None:
    entries = [
        Entry.directory("d"),
        Entry.file("d/f", b"hello"),
        Entry.symlink("l", "d/f"),
        Entry.device("c", "char", 5, 1),
    ]
    got = members(archive(entries, mtime=7))
    assert [(m.name, m.data, m.rdev, m.mtime, m.uid) for m in got] == [
        ("c", b"", (5, 1), 7, 0),
        ("d", b"", (0, 0), 7, 0),
        ("d/f", b"hello", (0, 0), 7, 0),
        ("l", b"d/f", (0, 0), 7, 0),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated archive at offset 0: expected a header"),
        (b"070707" + b"0" * 104, "bad magic b'070707' at offset 0: expected a newc cpio header (070701)"),
        (b"070701" + b"zz" * 52, "malformed header at offset 0: expected 13 hex fields"),
        (b"070701" + b"0" * 88 + b"00000000" + b"0" * 8, "name size 0 at offset 0: expected 2..4096"),
        (
            b"070701" + b"0" * 88 + b"00000004" + b"0" * 8 + b"ab",
            "truncated archive at offset 112: expected a name",
        ),
        (
            b"070701" + b"0" * 88 + b"00000003" + b"0" * 8 + b"abc\0",
            "name at offset 0 is not a single NUL-terminated string",
        ),
    ],
)
def test_reader_errors(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        list(read_cpio(io.BytesIO(data)))
    assert str(exc.value) == message


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=600),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
)
def test_reader_fuzz_raises_only_archive_errors(data: bytes, cut: int, flips: list[tuple[int, int]]) -> None:
    base = bytearray(
        archive([Entry.directory("d"), Entry.file("d/f", b"hello world"), Entry.symlink("l", "d/f")], mtime=0)
    )
    for pos, value in flips:
        base[pos % len(base)] = value
    for blob in (bytes(base[: cut % len(base)]), bytes(base), data):
        with contextlib.suppress(ArchiveError):
            list(read_cpio(io.BytesIO(blob), data=True))


def test_sockets_are_skipped_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        stream = io.StringIO()
        with log.use(log.StderrReporter(stream)):
            entries = tree_entries(tmp_path)
    finally:
        sock.close()
    assert [e.path for e in entries] == ["f"]
    assert (
        stream.getvalue() == f"warning: {tmp_path / 'sock'}: skipped: a cpio archive cannot hold a socket\n"
    )


def test_more_entry_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as exc:
        Entry.file("f", tmp_path / "nope")
    assert (
        str(exc.value)
        == f"{tmp_path / 'nope'}, member 'f': cannot read source file: No such file or directory"
    )
    with pytest.raises(ArchiveError) as exc:
        Entry.file("f", tmp_path)
    assert str(exc.value) == f"{tmp_path}, member 'f': source is not a regular file"
    with pytest.raises(ArchiveError, match=r"^member 'd': device number 1:-1 out of range$"):
        Entry.device("d", "block", 1, -1)
    with pytest.raises(
        ArchiveError, match=r"^member '\\udcff\\ud800': archive path is not encodable as bytes$"
    ):
        Entry.fifo("\udcff\ud800")
    with pytest.raises(ArchiveError, match=r"archive path is 4096 bytes long: the limit is 4095$"):
        Entry.fifo("a/" * 2047 + "bc")
    with pytest.raises(UsageError, match=r"^alignment 0: expected a positive number of bytes$"):
        write_cpio([], io.BytesIO(), align=0)


def test_fifo_and_non_utf8_names_round_trip() -> None:
    name = b"caf\xe9-\xff".decode("utf-8", "surrogateescape")
    data = archive([Entry.fifo("pipe", mode=0o620), Entry.file(name, b"x")])
    got = members(data)
    assert [(m.name, m.mode) for m in got] == [(name, 0o100644), ("pipe", 0o10620)]
    assert b"caf\xe9-\xff\0" in data


def test_large_host_file_that_changed_size_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "big"
    size = 3 * (1 << 20) + 5
    f.write_bytes(b"a" * size)
    entry = Entry.file("big", f)
    assert members(archive([entry]))[0].size == size
    f.write_bytes(b"a" * (size - 7))
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert (
        str(exc.value)
        == f"{f}, member 'big': content is {size - 7} bytes, expected {size} (changed while archiving?)"
    )
    f.write_bytes(b"a" * (size + 1))
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert (
        str(exc.value)
        == f"{f}, member 'big': content is longer than the expected {size} bytes (changed while archiving?)"
    )
    f.unlink()
    with pytest.raises(ArchiveError) as exc:
        archive([entry])
    assert str(exc.value) == f"{f}, member 'big': cannot read source file: No such file or directory"
