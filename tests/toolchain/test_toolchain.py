"""zig cross-compiles through the store: real compiles of tests/data/toolchain/*.c.

One session-scoped store (conftest's ``shared_store``) is shared by every test, so its zig cache
builds musl once per arch (about a minute each). The default run pays that for x86_64; aarch64 and
the second cold store (byte equality across directories and caches, concurrent compiles) are ``slow``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import require_tool

from eifbuild import cli, log
from eifbuild.errors import FileAccessError, StoreError, ToolError, UsageError
from eifbuild.store import Step, Store, StoreEntry
from eifbuild.store.step import RawParams
from eifbuild.toolchain import _elf as elf
from eifbuild.toolchain import init as init_module
from eifbuild.toolchain import zig as toolchain

if TYPE_CHECKING:
    from eifbuild.arch import Arch

DATA = Path(__file__).parents[1] / "data" / "toolchain"


@pytest.fixture(scope="session")
def hello_x86(shared_store: Store) -> StoreEntry:
    return toolchain.compile_c(shared_store, [DATA / "hello.c"], arch="x86_64", output_name="hello")


@pytest.fixture(scope="session")
def hello_arm(shared_store: Store) -> StoreEntry:
    return toolchain.compile_c(shared_store, [DATA / "hello.c"], arch="aarch64", output_name="hello")


def run(argv: list[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def assert_static(path: Path, machine: int) -> None:
    info = elf.read_elf(path)
    assert (info.machine, info.elf_type, info.interpreter) == (machine, elf.ET_EXEC, None)


# -- real compiles -----------------------------------------------------------------------------
def test_x86_64_binary_is_static_and_runs(hello_x86: StoreEntry) -> None:
    binary = toolchain.Binary.from_entry(hello_x86)
    assert binary.path == hello_x86.path / "hello"
    assert binary.sha256 == hashlib.sha256(binary.path.read_bytes()).hexdigest()
    assert binary.size == binary.path.stat().st_size
    assert_static(binary.path, 62)
    assert list(hello_x86.outputs) == ["hello"]
    proc = run([binary.path, "one"])
    assert (proc.returncode, proc.stdout) == (0, "hello from x86_64, arg=one, file=hello.c\n")
    assert run([binary.path, "a", "b"]).returncode == 3


def test_binary_of_another_kind_of_entry(tmp_path: Path) -> None:
    store = Store(tmp_path)

    def build(_: RawParams, out: Path) -> None:
        (out / "x").write_bytes(b"x")

    entry = store.realize(Step(RawParams("other", 1)), build)
    with pytest.raises(StoreError) as exc:
        toolchain.Binary.from_entry(entry)
    assert str(exc.value) == f"store entry {entry.key}: kind 'other', expected a zig-cc binary"


def test_step_record_names_target_flags_and_zig(hello_x86: StoreEntry) -> None:
    step = hello_x86.record["step"]
    assert step["kind"] == "zig-cc"
    assert step["params"] == {
        "target": "x86_64-linux-musl",
        "cflags": [],
        "sources": ["hello.c"],
        "output": "hello",
    }
    assert step["inputs"] == {"src/hello.c": hashlib.sha256((DATA / "hello.c").read_bytes()).hexdigest()}
    assert step["tool"] == {"zig": "0.17.1"}


def test_no_host_path_reaches_the_binary(hello_x86: StoreEntry, shared_store: Store) -> None:
    data = hello_x86.file("hello").read_bytes()
    for path in (shared_store.root, DATA, toolchain.zig_package_dir(), Path.home()):
        assert str(path).encode() not in data
    assert b"file=%s" in data  # the strings are there, so the search above can find things


def test_second_compile_is_a_store_hit(
    hello_x86: StoreEntry, shared_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same content and name from another directory: no zig process, the same entry."""

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(toolchain, "zig_package_dir", lambda: tmp_path / "no-zig-here")
    copy = tmp_path / "elsewhere" / "hello.c"
    copy.parent.mkdir()
    shutil.copyfile(DATA / "hello.c", copy)
    again = toolchain.compile_c(shared_store, [copy], arch="x86_64", output_name="hello")
    assert (again.key, again.path) == (hello_x86.key, hello_x86.path)
    assert toolchain.compile_c_binary(
        shared_store, [copy], arch="x86_64", output_name="hello"
    ).path == again.file("hello")


def test_a_zig_cache_that_has_musl_does_not_announce_building_it(
    hello_x86: StoreEntry, tmp_path: Path
) -> None:
    """A fresh store sharing the zig global cache (as `doit check` does) compiles in seconds: say so."""
    stream = io.StringIO()
    with log.use(log.StderrReporter(stream)):
        toolchain.compile_c(Store(tmp_path / "fresh"), [DATA / "hello.c"], arch="x86_64", output_name="again")
    assert "compiling again (x86_64)" in stream.getvalue()
    assert "musl" not in stream.getvalue()


def test_zig_comes_from_the_package_not_path(
    hello_x86: StoreEntry, shared_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "zig"
    fake.write_text("#!/bin/sh\necho 'fake zig on PATH' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    monkeypatch.setenv("ZIG_GLOBAL_CACHE_DIR", str(tmp_path / "not-this-cache"))
    entry = toolchain.compile_c(shared_store, [DATA / "hello.c"], arch="x86_64", cflags=["-DPATH_TEST"])
    assert entry.key != hello_x86.key
    assert_static(entry.file("a.out"), 62)
    assert not (tmp_path / "not-this-cache").exists()
    assert toolchain.zig_executable() == toolchain.zig_package_dir() / "zig"


def test_compile_error_reports_the_compiler_and_leaves_nothing(
    hello_x86: StoreEntry, shared_store: Store
) -> None:
    before = set(shared_store.keys())
    step = toolchain.compile_step([DATA / "broken.c"], arch="x86_64")
    with pytest.raises(ToolError) as exc:
        toolchain.compile_c(shared_store, [DATA / "broken.c"], arch="x86_64")
    assert str(exc.value) == (
        "zig cc failed for a.out (x86_64): broken.c:3:12: error: use of undeclared identifier 'undeclared_value'"
    )
    assert "1 error generated." in exc.value.output
    assert "    return undeclared_value;" in exc.value.output
    assert exc.value.returncode != 0
    assert exc.value.cmd is not None
    assert exc.value.cmd[1:4] == ["cc", "-target", "x86_64-linux-musl"]
    assert set(shared_store.keys()) == before
    assert shared_store.get(step.key) is None
    assert not shared_store.entry_dir(step.key).exists()
    assert list(shared_store.tmp_dir.iterdir()) == []


def test_link_error_is_reported(hello_x86: StoreEntry, shared_store: Store, tmp_path: Path) -> None:
    src = tmp_path / "undef.c"
    src.write_text("int missing(void);\nint main(void) { return missing(); }\n")
    with pytest.raises(ToolError) as exc:
        toolchain.compile_c(shared_store, [src], arch="x86_64")
    assert str(exc.value) == "zig cc failed for a.out (x86_64): ld.lld: error: undefined symbol: missing"


def test_dynamic_output_fails_the_elf_check(hello_x86: StoreEntry, shared_store: Store) -> None:
    before = set(shared_store.keys())
    with pytest.raises(ToolError) as exc:
        toolchain.compile_c(
            shared_store, [DATA / "hello.c"], arch="x86_64", cflags=["-dynamic"], output_name="dyn"
        )
    assert str(exc.value) == (
        "dyn (x86_64): dynamically linked (interpreter /lib/ld-musl-x86_64.so.1), expected a static executable"
    )
    assert set(shared_store.keys()) == before
    assert list(shared_store.tmp_dir.iterdir()) == []


def test_init_from_source_applies_aws_warnings(hello_x86: StoreEntry, shared_store: Store) -> None:
    entry = init_module.init_from_source(shared_store, DATA / "strict_ok.c", "x86_64")
    assert entry.record["step"]["params"]["cflags"] == list(init_module.INIT_CFLAGS)
    init = entry.file("init")
    assert_static(init, 62)
    assert run([init]).stdout == "proc /proc 0\nsys /sys 1\n"
    # -Wall -Wextra -Werror are really applied ...
    with pytest.raises(
        ToolError, match=r"^zig cc failed for init \(x86_64\): strict_unused\.c:2:29: error: unused"
    ):
        init_module.init_from_source(shared_store, DATA / "strict_unused.c", "x86_64")
    toolchain.compile_c(shared_store, [DATA / "strict_unused.c"], arch="x86_64")
    # ... and -Wno-missing-field-initializers is what lets an init.c-style table through.
    with pytest.raises(ToolError, match=r"-Werror,-Wmissing-field-initializers"):
        toolchain.compile_c(
            shared_store, [DATA / "strict_ok.c"], arch="x86_64", cflags=["-Wall", "-Wextra", "-Werror"]
        )


def test_the_cli_reaches_the_init_key(hello_x86: StoreEntry, shared_store: Store, tmp_path: Path) -> None:
    entry = init_module.init_from_source(shared_store, DATA / "strict_ok.c", "x86_64")
    out = tmp_path / "init"
    flags = "--cflags=" + " ".join(init_module.INIT_CFLAGS)
    argv = [
        "compile",
        str(DATA / "strict_ok.c"),
        "--arch",
        "x86_64",
        "-o",
        str(out),
        flags,
        "--cache",
        str(shared_store.root),
    ]
    assert cli.main(argv) == 0
    assert out.read_bytes() == entry.file("init").read_bytes()


def test_headers_are_copied_not_compiled(hello_x86: StoreEntry, shared_store: Store, tmp_path: Path) -> None:
    binary = toolchain.compile_c_binary(
        shared_store, [DATA / "with_header.c", DATA / "greeting.h"], arch="x86_64"
    )
    assert run([binary.path]).stdout == "greetings from a header\n"
    changed = tmp_path / "greeting.h"
    changed.write_text('#define GREETING "changed"\n')
    other = toolchain.compile_c_binary(shared_store, [DATA / "with_header.c", changed], arch="x86_64")
    assert other.key != binary.key
    assert run([other.path]).stdout == "changed\n"


# -- the command line --------------------------------------------------------------------------
def test_cli_compile_writes_the_binary(
    hello_x86: StoreEntry,
    shared_store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EIFBUILD_CACHE", str(shared_store.root))
    out = tmp_path / "bin" / "hello"
    assert cli.main(["-q", "compile", str(DATA / "hello.c"), "--arch", "amd64", "-o", str(out)]) == 0
    assert out.read_bytes() == hello_x86.file("hello").read_bytes()
    assert out.stat().st_mode & 0o777 == 0o755
    captured = capsys.readouterr()
    assert captured.out == f"{hello_x86.digest('hello')}  {out}\n"
    assert captured.err == ""  # a store hit: nothing compiled, nothing to report


def test_cli_compile_error_is_one_line(
    hello_x86: StoreEntry, shared_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "broken"
    argv = [
        "-q",
        "compile",
        str(DATA / "broken.c"),
        "--arch",
        "x86_64",
        "-o",
        str(out),
        "--cache",
        str(shared_store.root),
    ]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: zig cc failed for broken (x86_64): broken.c:3:12: error: use of undeclared identifier "
        "'undeclared_value'\n"
    )
    assert not out.exists()
    assert cli.main(["-v", *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "  zig cc broken (x86_64) output:\nbroken.c:3:12: error:" in err
    assert "1 error generated." in err


def test_cli_rejects_unknown_arch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "compile",
        str(DATA / "hello.c"),
        "--arch",
        "riscv64",
        "-o",
        str(tmp_path / "x"),
        "--cache",
        str(tmp_path),
    ]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: key '--arch': unknown architecture 'riscv64': expected one of x86_64, aarch64\n"
    )


# -- keys and validation (no compiles) ---------------------------------------------------------
def test_key_covers_content_names_flags_target_and_output(tmp_path: Path) -> None:
    src = tmp_path / "a" / "hello.c"
    src.parent.mkdir()
    shutil.copyfile(DATA / "hello.c", src)
    base = toolchain.compile_step([src], arch="x86_64").key
    moved = tmp_path / "b" / "hello.c"
    moved.parent.mkdir()
    shutil.copyfile(src, moved)
    assert toolchain.compile_step([moved], arch="x86_64").key == base
    renamed = tmp_path / "b" / "hi.c"
    shutil.copyfile(src, renamed)
    variants = [
        toolchain.compile_step([renamed], arch="x86_64"),
        toolchain.compile_step([src], arch="aarch64"),
        toolchain.compile_step([src], arch="x86_64", cflags=["-Os"]),
        toolchain.compile_step([src], arch="x86_64", output_name="init"),
        toolchain.compile_step([src, DATA / "greeting.h"], arch="x86_64"),
        toolchain.compile_step([DATA / "greeting.h", src], arch="x86_64"),
    ]
    keys = {step.key for step in variants}
    assert len(keys) == len(variants)
    assert base not in keys
    src.write_text(src.read_text() + "\n")
    assert toolchain.compile_step([src], arch="x86_64").key != base


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("-mcpu=native", "key 'cflags': -mcpu=native depends on the build machine's CPU; the output would not be reproducible"),
        ("-march=native", "key 'cflags': -march=native depends on the build machine's CPU; the output would not be reproducible"),
        ("-target", "key 'cflags': -target is set by eifbuild (target from --arch, output from -o); remove it"),
        ("--target=x86_64-linux-gnu", "key 'cflags': --target=x86_64-linux-gnu is set by eifbuild (target from --arch, output from -o); remove it"),
        ("-o", "key 'cflags': -o is set by eifbuild (target from --arch, output from -o); remove it"),
        ("-c", "key 'cflags': -c is set by eifbuild (target from --arch, output from -o); remove it"),
        ("-I/usr/include", "key 'cflags': -I/usr/include reads files the compile key does not cover; list headers among the sources instead"),
        ("-include", "key 'cflags': -include reads files the compile key does not cover; list headers among the sources instead"),
        ("@flags.txt", "key 'cflags': @flags.txt reads files the compile key does not cover; list headers among the sources instead"),
    ],
)  # fmt: skip
def test_rejected_cflags(flag: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        toolchain.compile_step([DATA / "hello.c"], arch="x86_64", cflags=["-Wall", flag])
    assert str(exc.value) == message


def test_source_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.c"
    cases: list[tuple[list[Path], str, str]] = [
        ([], "a.out", "no source files given"),
        ([DATA / "greeting.h"], "a.out", "only headers given: name at least one .c source"),
        (
            [DATA / "hello.c", tmp_path / "hello.c"],
            "a.out",
            f"two sources named 'hello.c' ({DATA / 'hello.c'} and {tmp_path / 'hello.c'}); "
            "sources are compiled side by side",
        ),
        ([tmp_path / "-o.c"], "a.out", "source file name '-o.c': expected a plain file name (no '/', not starting with '-')"),
        ([DATA / "hello.c"], "bin/init", "output name 'bin/init': expected a plain file name (no '/', not starting with '-')"),
        ([DATA / "hello.c"], "..", "output name '..': expected a plain file name (no '/', not starting with '-')"),
    ]  # fmt: skip
    for sources, output, message in cases:
        with pytest.raises(UsageError) as exc:
            toolchain.compile_step(sources, arch="x86_64", output_name=output)
        assert str(exc.value) == message
    with pytest.raises(FileAccessError) as missing_exc:
        toolchain.compile_step([missing], arch="x86_64", output_name="a.out")
    assert str(missing_exc.value) == f"{missing}: source file not found"


def test_zig_environment_is_only_what_zig_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(toolchain.ZIG_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = toolchain.zig_cache_dir(Store(tmp_path))
    assert cache == tmp_path / "zig-cache"
    assert toolchain.zig_environment(cache) == {
        "HOME": str(cache / "home"),
        "LC_ALL": "C",
        "SOURCE_DATE_EPOCH": "0",
        "TZ": "UTC",
        "ZIG_GLOBAL_CACHE_DIR": str(tmp_path / "xdg" / "eifbuild" / "zig" / toolchain.zig_identity()),
        "ZIG_LOCAL_CACHE_DIR": str(cache / "local"),
    }


def test_zigs_libc_builds_are_kept_once_per_user_and_zig_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #27: musl was rebuilt for every project store (40-60 s each)."""
    monkeypatch.delenv(toolchain.ZIG_CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    one, two = (toolchain.zig_environment(toolchain.zig_cache_dir(Store(tmp_path / n))) for n in ("a", "b"))
    assert one["ZIG_GLOBAL_CACHE_DIR"] == two["ZIG_GLOBAL_CACHE_DIR"]
    assert one["ZIG_GLOBAL_CACHE_DIR"].endswith(f"/eifbuild/zig/{toolchain.zig_identity()}")
    assert one["ZIG_LOCAL_CACHE_DIR"] != two["ZIG_LOCAL_CACHE_DIR"]


def test_shared_global_zig_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(toolchain.ZIG_CACHE_ENV, str(tmp_path / "shared"))
    env = toolchain.zig_environment(toolchain.zig_cache_dir(Store(tmp_path / "store")))
    assert env["ZIG_GLOBAL_CACHE_DIR"] == str(tmp_path / "shared")
    assert env["ZIG_LOCAL_CACHE_DIR"] == str(tmp_path / "store" / "zig-cache" / "local")


def test_missing_ziglang_is_a_tool_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ToolError) as exc:
        toolchain.zig_executable()
    assert (
        str(exc.value)
        == "zig not found: the Python package ziglang is not installed (pip install ziglang==0.17.1)"
    )


# -- aarch64 and a second cold store (slow: a musl build per arch and store) --------------------
@pytest.mark.slow
def test_aarch64_binary_is_static_and_runs_under_qemu(hello_arm: StoreEntry) -> None:
    path = hello_arm.file("hello")
    assert_static(path, 183)
    qemu = require_tool("qemu-aarch64-static")
    proc = run([qemu, path, "arm"])
    assert (proc.returncode, proc.stdout) == (0, "hello from aarch64, arg=arm, file=hello.c\n")


_COMPILE_SCRIPT = """
import sys
from pathlib import Path
from eifbuild import log
from eifbuild.toolchain import zig as toolchain
from eifbuild.store import Store
with log.use(log.StderrReporter(verbosity=1)):
    binary = toolchain.compile_c_binary(Store(sys.argv[1]), [Path(sys.argv[2])], arch=sys.argv[3], output_name="hello")
print(binary.key, binary.path)
"""


@pytest.mark.slow
def test_other_dir_and_cold_cache_give_identical_bytes(
    hello_x86: StoreEntry, hello_arm: StoreEntry, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A second store in another directory, sources as relative paths from another working dir.

    Compiles run concurrently in separate processes on the cold zig cache: two of the same key
    (the store lock lets one compile), one other program for the same target (zig's cache lock),
    and aarch64 alongside.
    """
    work = tmp_path_factory.mktemp("other-workdir")
    for name in ("hello.c", "other.c"):
        shutil.copyfile(DATA / name, work / name)
    store_b = work / "store-b"
    jobs: list[tuple[str, Arch]] = [
        ("hello.c", "x86_64"),
        ("hello.c", "x86_64"),
        ("other.c", "x86_64"),
        ("hello.c", "aarch64"),
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _COMPILE_SCRIPT, "store-b", src, arch],
            cwd=work,
            env={  # really cold: no shared zig cache, an empty user cache dir
                **{k: v for k, v in os.environ.items() if k != toolchain.ZIG_CACHE_ENV},
                "XDG_CACHE_HOME": str(work / "xdg"),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src, arch in jobs
    ]
    results = [p.communicate(timeout=1200) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    keys = [out.split()[0] for out, _ in results]
    built = ["store: built zig-cc" in err for _, err in results]
    assert keys[0] == keys[1] == hello_x86.key
    assert keys[3] == hello_arm.key
    assert built[:2].count(True) == 1
    assert built[2:] == [True, True]
    b = Store(store_b)
    for entry in (hello_x86, hello_arm):
        copy = b.get(entry.key)
        assert copy is not None
        assert copy.path != entry.path
        assert copy.file("hello").read_bytes() == entry.file("hello").read_bytes()
    other = b.get(keys[2])
    assert other is not None
    assert_static(other.file("hello"), 62)
    assert run([other.file("hello")]).stdout == "other 5\n"
