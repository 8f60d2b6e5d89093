"""Ramdisk inputs (walk, mappings), the two Nitro layouts, cmd/env encoding and the CLI."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from cpio_oracle import gnu_archive
from hypothesis import given, settings
from hypothesis import strategies as st

from eifbuild import log
from eifbuild.cli import main
from eifbuild.errors import ArchiveError, FileAccessError, InputError, UsageError
from eifbuild.ramdisk import (
    CpioMember,
    Entry,
    app_entries,
    bootstrap_entries,
    list_archive,
    parse_env_args,
    read_cpio,
    tree_entries,
    write_cpio,
)
from eifbuild.ramdisk.layout import (
    ROOTFS_DIRS,
    Symlink,
    encode_cmd,
    encode_env,
    kept_private,
    mapping_entries,
    normalized_mode,
    scan_tree,
)


def members(data: bytes) -> list[CpioMember]:
    return list(read_cpio(io.BytesIO(data), data=True))


def pack(entries: list[Entry]) -> bytes:
    out = io.BytesIO()
    write_cpio(entries, out, mtime=0)
    return out.getvalue()


def layout(entries: list[Entry]) -> list[tuple[str, str, int]]:
    return sorted((e.path, e.kind, e.mode) for e in entries)


@pytest.fixture
def warnings() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    with log.use(log.StderrReporter(stream)):
        yield stream


def init_c_lines(data: bytes) -> list[str]:
    """How init.c's read_config sees /cmd or /env: getline, strip one trailing newline, stop at NUL."""
    lines = []
    for raw in io.BytesIO(data):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        lines.append(line.split(b"\0")[0].decode())
    return lines


# ---------------------------------------------------------------------------------------------------
# walk


def test_scan_tree_is_sorted_and_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    root = tmp_path / "root"
    for d in ("b", "a", "a/z", "a/c"):
        (root / d).mkdir(parents=True)
    (root / "a" / "f").write_bytes(b"x")
    (root / "a-b").write_bytes(b"")
    (root / "link").symlink_to(outside)
    assert [(s.path, s.host) for s in scan_tree(root)] == [
        ("a", str(root / "a")),
        ("a/c", str(root / "a/c")),
        ("a/f", str(root / "a/f")),
        ("a/z", str(root / "a/z")),
        ("a-b", str(root / "a-b")),
        ("b", str(root / "b")),
        ("link", str(root / "link")),
    ]
    assert [e.kind for e in tree_entries(root) if e.path == "link"] == ["symlink"]


def test_tree_entries_modes_hardlinks_and_prefix(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir(mode=0o700)
    (tmp_path / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(tmp_path / "bin" / "tool", 0o4710)  # noqa: S103 - setuid on purpose
    os.link(tmp_path / "bin" / "tool", tmp_path / "tool2")
    (tmp_path / "data").write_bytes(b"abc")
    os.chmod(tmp_path / "data", 0o600)
    (tmp_path / "l").symlink_to("data")
    os.chmod(tmp_path, 0o750)  # noqa: S103
    # normalize never gives group or other a bit they lacked, and keeps setuid (issue #27)
    assert layout(tree_entries(tmp_path)) == [
        ("bin", "dir", 0o700),
        ("bin/tool", "file", 0o4710),
        ("data", "file", 0o600),
        ("l", "symlink", 0o777),
        ("tool2", "hardlink", 0),
    ]
    preserved = tree_entries(tmp_path, modes="preserve", prefix="rootfs")
    assert layout(preserved) == [
        ("rootfs", "dir", 0o750),
        ("rootfs/bin", "dir", 0o700),
        ("rootfs/bin/tool", "file", 0o4710),
        ("rootfs/data", "file", 0o600),
        ("rootfs/l", "symlink", 0o777),
        ("rootfs/tool2", "hardlink", 0),
    ]
    assert next(e for e in preserved if e.kind == "hardlink").link_to == "rootfs/bin/tool"
    assert next(e for e in preserved if e.path == "rootfs/data") == Entry(
        "rootfs/data", "file", 0o600, 3, str(tmp_path / "data")
    )


def test_walk_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as exc:
        tree_entries(tmp_path / "missing")
    assert str(exc.value) == f"{tmp_path / 'missing'}: cannot read tree: No such file or directory"
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ArchiveError) as exc:
        tree_entries(tmp_path / "f")
    assert str(exc.value) == f"{tmp_path / 'f'}: expected a directory to pack"
    with pytest.raises(UsageError, match=r"^unknown modes policy 'keep': expected normalize or preserve$"):
        tree_entries(tmp_path, modes="keep")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# explicit mappings


def test_mapping_entries(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_bytes(b"\x7fELF")
    os.chmod(tool, 0o555)  # noqa: S103
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "x").write_bytes(b"x")
    entries = mapping_entries(
        {
            "usr/bin/tool": tool,
            "etc/hostname": b"enclave\n",
            "etc/mtab": Symlink("/proc/mounts"),
            "opt/app": tree,
            "dev/null": Entry.device("dev/null", "char", 1, 3, mode=0o666),
        }
    )
    assert layout(entries) == [
        ("dev", "dir", 0o755),
        ("dev/null", "char", 0o666),
        ("etc", "dir", 0o755),
        ("etc/hostname", "file", 0o644),
        ("etc/mtab", "symlink", 0o777),
        ("opt", "dir", 0o755),
        ("opt/app", "dir", 0o755),
        ("opt/app/sub", "dir", 0o755),
        ("opt/app/sub/x", "file", 0o644),
        ("usr", "dir", 0o755),
        ("usr/bin", "dir", 0o755),
        ("usr/bin/tool", "file", 0o755),
    ]
    got = {m.name: m for m in members(pack(entries))}
    assert got["usr/bin/tool"].data == b"\x7fELF"
    assert got["etc/mtab"].data == b"/proc/mounts"
    assert got["dev/null"].rdev == (1, 3)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        (
            {"../etc/passwd": b""},
            "member '../etc/passwd': archive path escapes the archive root: expected a relative path without '..'",
        ),
        (
            {"/etc/passwd": b""},
            "member '/etc/passwd': archive path escapes the archive root: expected a relative path without '..'",
        ),
        (
            {"a/./b": b""},
            "member 'a/./b': archive path is not normalised: expected 'a/b' without empty or '.' components",
        ),
        ({"x": Entry.file("y", b"")}, "member 'x': mapping key 'x' holds an entry for 'y'"),
    ],
)
def test_mapping_errors(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        mapping_entries(mapping)  # type: ignore[arg-type]
    assert str(exc.value) == message


def test_mapping_missing_source(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as exc:
        mapping_entries({"bin/app": tmp_path / "nope"})
    assert (
        str(exc.value)
        == f"{tmp_path / 'nope'}, member 'bin/app': cannot read source: No such file or directory"
    )


# ---------------------------------------------------------------------------------------------------
# bootstrap layout


def test_bootstrap_layout(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_bytes(b"\x7fELF init")
    os.chmod(init, 0o500)
    nsm = tmp_path / "nsm.ko"
    nsm.write_bytes(b"\x7fELF module")
    data = pack(bootstrap_entries(init, nsm))
    assert [(m.name, m.mode, m.nlink, m.data) for m in members(data)] == [
        ("dev", 0o40755, 2, b""),
        ("init", 0o100755, 1, b"\x7fELF init"),
        ("nsm.ko", 0o100755, 1, b"\x7fELF module"),
    ]
    assert [m.name for m in members(pack(bootstrap_entries(b"init bytes")))] == ["dev", "init"]


def test_bootstrap_missing_init(tmp_path: Path) -> None:
    with pytest.raises(FileAccessError) as exc:
        bootstrap_entries(tmp_path / "init")
    assert str(exc.value) == f"{tmp_path / 'init'}: init executable: No such file or directory"
    with pytest.raises(FileAccessError) as exc:
        bootstrap_entries(tmp_path)
    assert str(exc.value) == f"{tmp_path}: init executable: expected a regular file"
    (tmp_path / "init").write_bytes(b"x")
    with pytest.raises(FileAccessError) as exc:
        bootstrap_entries(tmp_path / "init", tmp_path / "nsm.ko")
    assert str(exc.value) == f"{tmp_path / 'nsm.ko'}: NSM kernel module: No such file or directory"


# ---------------------------------------------------------------------------------------------------
# app layout


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "app").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chmod(root / "usr" / "bin" / "app", 0o755)  # noqa: S103
    (root / "bin").symlink_to("usr/bin")
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)  # noqa: S103 - like a real /tmp
    return root


def test_app_layout(tmp_path: Path, warnings: io.StringIO) -> None:
    entries = app_entries(_rootfs(tmp_path), ["app", "--port", "8000"], {"B": "2", "A": "x=1 y"})
    assert layout(entries) == [
        ("cmd", "file", 0o644),
        ("env", "file", 0o644),
        ("rootfs", "dir", 0o755),
        ("rootfs/bin", "symlink", 0o777),
        ("rootfs/dev", "dir", 0o755),
        ("rootfs/proc", "dir", 0o755),
        ("rootfs/run", "dir", 0o755),
        ("rootfs/sys", "dir", 0o755),
        ("rootfs/tmp", "dir", 0o1777),  # a world-writable sticky dir keeps its mode (issue #27)
        ("rootfs/usr", "dir", 0o755),
        ("rootfs/usr/bin", "dir", 0o755),
        ("rootfs/usr/bin/app", "file", 0o755),
        ("rootfs/var", "dir", 0o755),
    ]
    got = {m.name: m.data for m in members(pack(entries))}
    assert got["cmd"] == b"app\n--port\n8000\n"
    assert got["env"] == b"A=x=1 y\nB=2\n"  # sorted by key
    assert init_c_lines(got["cmd"]) == ["app", "--port", "8000"]
    assert warnings.getvalue() == ""  # found through /bin -> usr/bin


@pytest.mark.parametrize(
    ("mode", "normalized", "private"),
    [
        (0o100640, 0o640, True),  # /etc/shadow stays unreadable to others
        (0o100600, 0o600, True),
        (0o100664, 0o644, False),  # a umask's group write goes
        (0o100444, 0o644, False),  # the owner (root) gets its canonical bits
        (0o100777, 0o755, False),
        (0o104755, 0o4755, False),  # setuid kept
        (0o102711, 0o2711, True),  # setgid kept, others' read not added
        (0o040700, 0o700, True),
        (0o040775, 0o755, False),
        (0o041777, 0o1777, False),  # /tmp
        (0o041775, 0o755, False),  # sticky but not world-writable: canonical
        (0o120700, 0o777, False),  # symlinks
    ],
)
def test_normalize_never_widens_group_or_other(mode: int, normalized: int, private: bool) -> None:
    assert normalized_mode(mode) == normalized
    assert kept_private(mode) is private


def test_normalize_says_which_entries_it_kept_private(tmp_path: Path, warnings: io.StringIO) -> None:
    root = _rootfs(tmp_path)
    (root / "etc").mkdir()
    (root / "etc" / "shadow").write_text("root:*:1::::::\n")
    os.chmod(root / "etc" / "shadow", 0o640)
    modes = {e.path: e.mode for e in app_entries(root, ["/usr/bin/app"], {})}
    assert modes["rootfs/etc/shadow"] == 0o640
    assert "modes normalize kept 1 entries narrower than 0644/0755 (etc/shadow)" in warnings.getvalue()


def test_app_layout_preserve_keeps_existing_dirs(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    os.chmod(root, 0o700)
    entries = app_entries(root, ["/usr/bin/app"], ["Z=1", "A=2"], modes="preserve")
    modes = {e.path: e.mode for e in entries}
    assert modes["rootfs"] == 0o700
    assert modes["rootfs/tmp"] == 0o1777
    assert modes["rootfs/dev"] == 0o755
    assert next(e.source for e in entries if e.path == "env") == b"Z=1\nA=2\n"  # a list keeps its order
    assert {f"rootfs/{d}" for d in ROOTFS_DIRS} <= set(modes)


def test_app_layout_from_entries_and_generated_files(tmp_path: Path) -> None:
    """The OCI importer's shape: a rootfs given as entries (hard links inside), plus store files."""
    binary = tmp_path / "built"
    binary.write_bytes(b"\x7fELF built")
    rootfs = [
        Entry.directory("etc"),
        Entry.file("etc/os-release", b"ID=test\n"),
        Entry.hardlink("etc/os-release2", "etc/os-release"),
        Entry.directory("sbin"),
        Entry.file("sbin/init2", lambda: io.BytesIO(b"x"), size=1, mode=0o4755),
        Entry.file("opt/deep/f", b""),  # layers may omit parent directories
    ]
    entries = app_entries(
        rootfs, ["/app/server"], {}, files={"app/server": binary, "etc/os-release": b"ID=new\n"}
    )
    got = {m.name: m for m in members(pack(entries))}
    assert got["rootfs/app/server"].data == b"\x7fELF built"
    assert got["rootfs/app/server"].mode == 0o100644  # the host file has no x bit: normalised
    assert got["rootfs/etc/os-release"].data == b""  # held back: its hard link carries the data
    assert got["rootfs/etc/os-release2"].data == b"ID=new\n"
    assert got["rootfs/sbin/init2"].mode == 0o104755
    assert got["env"].data == b""
    assert (got["rootfs/opt"].mode, got["rootfs/opt/deep"].mode) == (0o40755, 0o40755)


def test_app_layout_rejects_a_file_where_init_mounts(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "proc").write_bytes(b"")
    with pytest.raises(ArchiveError) as exc:
        app_entries(root, ["/x"], {})
    assert str(exc.value) == "member 'rootfs/proc': expected a directory (init.c mounts on it), found a file"


def test_program_warnings(tmp_path: Path, warnings: io.StringIO) -> None:
    root = _rootfs(tmp_path)
    app_entries(root, ["python3"], {})
    app_entries(root, ["/usr/local/bin/app"], {})
    app_entries(root, ["/bin/app"], {})  # through the symlink: fine
    assert warnings.getvalue().splitlines() == [
        "warning: cmd[0] 'python3' is not in /sbin, /usr/sbin, /bin or /usr/bin of the rootfs: init.c only"
        " searches those for a bare program name (whatever PATH /env sets); use an absolute path",
        "warning: cmd[0] '/usr/local/bin/app' does not exist in the rootfs",
    ]


@pytest.mark.parametrize(
    ("cmd", "env", "message"),
    [
        (
            ["/app", "a\nb"],
            {},
            "key 'cmd[1]': value 'a\\nb' contains a newline: init.c reads /cmd one entry per line and would split it",
        ),
        (
            ["/app\0"],
            {},
            "key 'cmd[0]': value '/app\\x00' contains a NUL byte: init.c reads /cmd one entry per line and would split it",
        ),
        (
            [],
            {},
            "key 'cmd': expected a list holding at least the program to run (an empty /cmd makes init.c run 'sh')",
        ),
        (
            "/app",
            {},
            "key 'cmd': expected a list holding at least the program to run (an empty /cmd makes init.c run 'sh')",
        ),
        ([""], {}, "key 'cmd[0]': empty program name"),
        (
            ["/app"],
            {"K": "a\nb"},
            "key 'env.K': value 'K=a\\nb' contains a newline: init.c reads /env one entry per line and would split it",
        ),
        (["/app"], {"": "x"}, "key 'env.': entry '=x': expected KEY=value with a non-empty KEY"),
        (["/app"], ["NOVALUE"], "key 'env[0]': entry 'NOVALUE': expected KEY=value with a non-empty KEY"),
        (["/app"], "A=1", "key 'env': expected a mapping or a list of KEY=value strings, got a string"),
    ],
)
def test_cmd_env_errors(tmp_path: Path, cmd: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as exc:
        app_entries(tmp_path, cmd, env)
    assert str(exc.value) == message


line = st.text(st.characters(blacklist_characters="\n\0", blacklist_categories=["Cs"]))


@settings(deadline=None)
@given(
    cmd=st.lists(line, min_size=1).filter(lambda c: c[0] != ""),
    env=st.dictionaries(line.filter(lambda k: k != "" and "=" not in k), line),
)
def test_init_c_reads_back_what_we_encode(cmd: list[str], env: dict[str, str]) -> None:
    assert init_c_lines(encode_cmd(cmd)) == cmd
    assert init_c_lines(encode_env(env)) == [f"{k}={v}" for k, v in sorted(env.items())]


def test_parse_env_args() -> None:
    assert parse_env_args(["B=1", "A=x=y", "C="]) == {"B": "1", "A": "x=y", "C": ""}
    with pytest.raises(UsageError, match=r"^--env A given twice$"):
        parse_env_args(["A=1", "A=2"])
    with pytest.raises(UsageError, match=r"^--env 'A': expected KEY=value with a non-empty KEY$"):
        parse_env_args(["A"])


# ---------------------------------------------------------------------------------------------------
# listing and CLI


def test_list_archive_plain_and_gzip(tmp_path: Path) -> None:
    entries = [
        Entry.directory("dev"),
        Entry.device("dev/console", "char", 5, 1, mode=0o600),
        Entry.file("init", b"abc", mode=0o755),
        Entry.symlink("sh", "/bin/busybox"),
    ]
    expected = [
        "drwxr-xr-x   2 0     0              0 1970-01-01 00:00 dev",
        "crw-------   1 0     0           5, 1 1970-01-01 00:00 dev/console",
        "-rwxr-xr-x   1 0     0              3 1970-01-01 00:00 init",
        "lrwxrwxrwx   1 0     0             12 1970-01-01 00:00 sh -> /bin/busybox",
    ]
    plain = tmp_path / "a.cpio"
    plain.write_bytes(pack(entries))
    assert list_archive(plain) == expected
    packed = tmp_path / "a.cpio.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()) + b"\0\0")
    assert list_archive(packed) == expected
    (tmp_path / "bad").write_bytes(b"\x1f\x8bxx")
    with pytest.raises(ArchiveError, match="bad"):
        list_archive(tmp_path / "bad")


def test_cli_tree_equals_gnu_cpio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("cpio")
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "x").write_bytes(b"x" * 1000)
    os.chmod(tree / "d" / "x", 0o640)
    (tree / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(tree / "run.sh", 0o700)
    out = tmp_path / "out.cpio"
    assert main(["ramdisk", str(tree), "-o", str(out), "--mtime", "1000"]) == 0
    data = out.read_bytes()
    assert capsys.readouterr().out == f"{__import__('hashlib').sha256(data).hexdigest()}  {out}\n"
    assert data == gnu_archive(tree, mtime=1000, modes="normalize")


def test_cli_sys_app_list_and_gzip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = tmp_path / "init"
    init.write_bytes(b"init")
    sys_out = tmp_path / "sys.cpio"
    assert main(["ramdisk", "--sys", "--init", str(init), "-o", str(sys_out)]) == 0
    assert [m.name for m in members(sys_out.read_bytes())] == ["dev", "init"]

    rootfs = _rootfs(tmp_path)
    app_out = tmp_path / "app.cpio.gz"
    argv = [
        "ramdisk",
        "--app",
        "--rootfs",
        str(rootfs),
        "--cmd",
        "/usr/bin/app",
        "--cmd=--port",
        "--cmd",
        "80",
    ]
    assert main([*argv, "--env", "B=2", "--env", "A=1", "-o", str(app_out), "--gzip"]) == 0
    raw = app_out.read_bytes()
    assert len(raw) % 4 == 0
    got = {m.name: m.data for m in members(gzip.decompress(raw))}
    assert got["cmd"] == b"/usr/bin/app\n--port\n80\n"
    assert got["env"] == b"A=1\nB=2\n"
    capsys.readouterr()
    assert main(["ramdisk", "--list", str(app_out)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].endswith(" cmd")
    assert any(line.endswith(" rootfs/bin -> usr/bin") for line in listed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sys", "-o", "x"], "ramdisk: --sys needs --init"),
        (["--app", "--rootfs", "r", "-o", "x"], "ramdisk: --app needs --cmd"),
        (["tree"], "ramdisk: TREE needs -o"),
        (["tree", "--sys", "--init", "i", "-o", "x"], "ramdisk: TREE cannot be used with --sys"),
        (["--list", "f", "-o", "x"], "ramdisk: -o cannot be used with --list"),
        (["tree", "-o", "x", "--cmd", "/a"], "ramdisk: --cmd cannot be used with TREE"),
    ],
)
def test_cli_misuse(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ramdisk", *argv]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_cli_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ramdisk", "--sys", "--init", str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 2
    assert (
        capsys.readouterr().err == f"error: {tmp_path / 'none'}: init executable: No such file or directory\n"
    )
    assert not (tmp_path / "o").exists()
    argv = ["ramdisk", "--app", "--rootfs", str(tmp_path), "--cmd", "a\nb", "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "contains a newline" in capsys.readouterr().err


def test_extracted_app_ramdisk_has_what_init_c_needs(tmp_path: Path) -> None:
    require_tool("cpio")
    data = pack(app_entries(_rootfs(tmp_path), ["/bin/app"], {"PATH": "/usr/bin"}))
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=dest, check=True)
    assert (dest / "cmd").read_bytes() == b"/bin/app\n"
    assert (dest / "env").read_bytes() == b"PATH=/usr/bin\n"
    for d in ROOTFS_DIRS:
        assert (dest / "rootfs" / d).is_dir()
    assert (dest / "rootfs" / "bin" / "app").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_more_layout_errors_and_warnings(tmp_path: Path, warnings: io.StringIO) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ArchiveError) as exc:
        mapping_entries({"x": fifo})
    assert str(exc.value) == f"{fifo}, member 'x': source is not a regular file or directory"
    with pytest.raises(ArchiveError, match=r"^member 'etc': cannot replace a directory with a file$"):
        app_entries([Entry.directory("etc")], ["/x"], {}, files={"etc": b""})
    root = [
        Entry.symlink("run", "/var/run"),
        Entry.directory("usr"),
        Entry.directory("usr/lib"),
        Entry.file("usr/lib/tool", b"", mode=0o755),
        Entry.symlink("usr/sbin", "../usr/lib/."),
        Entry.symlink("loop", "loop"),
    ]
    app_entries(root, ["tool"], {})  # found: /usr/sbin -> ../usr/lib
    app_entries(root, ["/loop/x"], {})
    assert warnings.getvalue().splitlines() == [
        "warning: rootfs/run is a symlink to '/var/run': init.c mounts on it, so it must resolve",
        "warning: rootfs/run is a symlink to '/var/run': init.c mounts on it, so it must resolve",
        "warning: cmd[0] '/loop/x' does not exist in the rootfs",
    ]


def test_list_archive_errors(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as exc:
        list_archive(tmp_path / "none.cpio")
    assert str(exc.value) == f"{tmp_path / 'none.cpio'}: cannot read archive: No such file or directory"
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(pack([Entry.file("f", os.urandom(3000))]))[:100])
    with pytest.raises(ArchiveError, match=r"corrupt gzip stream: "):
        list_archive(cut)
    raw = tmp_path / "cut.cpio"
    raw.write_bytes(pack([Entry.file("f", b"abc")])[:50])
    with pytest.raises(ArchiveError) as exc:
        list_archive(raw)
    assert str(exc.value) == f"{raw}: truncated archive at offset 50: expected a header"
