"""Real boots under QEMU (TCG): the committed demo kernels, eifbuild's init, the hello app.

Each boot takes a few seconds; the first compile of init and hello per arch builds zig's musl
(about a minute each, once per test session).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import require_tool

from eifbuild.arch import info
from eifbuild.cli import main
from eifbuild.eif import read_eif
from eifbuild.eif.metadata import make_metadata
from eifbuild.eif.writer import write_eif
from eifbuild.ramdisk import Entry, app_entries, bootstrap_entries, write_cpio_file
from eifbuild.runtime import _qemu as qemu
from eifbuild.runtime import boot
from eifbuild.runtime._console import run_qemu
from eifbuild.store import Store
from eifbuild.toolchain import init_from_source
from eifbuild.toolchain.zig import compile_c_binary

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eifbuild.arch import Arch

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "examples" / "kernel"
HELLO_C = REPO / "examples" / "hello" / "hello.c"
ARCHES: tuple[Arch, ...] = ("x86_64", "aarch64")
HELLO_LINE = "Hello from the enclave, eifbuild! [one arg]"


def _qemu(arch: Arch) -> None:
    require_tool(info(arch).qemu_system)


def _init(store: Store, arch: Arch) -> Path:
    return init_from_source(store, boot.EIFBUILD_INIT_C, arch).file("init")


def _hello(store: Store, arch: Arch) -> Path:
    return compile_c_binary(store, [HELLO_C], arch=arch, output_name="hello").path


def _eif(
    tmp_path: Path,
    arch: Arch,
    bootstrap: Sequence[Entry],
    app: Sequence[Entry],
    name: str = "test",
) -> Path:
    kernel = KERNELS / arch / info(arch).kernel_image
    cmdline = (KERNELS / arch / "cmdline").read_text().strip()
    ramdisks = []
    for part, entries in (("bootstrap", bootstrap), ("app", app)):
        path = tmp_path / f"{name}-{part}.cpio"
        write_cpio_file(entries, path, mtime=0)
        ramdisks.append(path)
    out = tmp_path / f"{name}-{arch}.eif"
    write_eif(
        out,
        kernel=kernel,
        cmdline=cmdline,
        ramdisks=ramdisks,
        metadata=make_metadata(kernel=kernel),
        arch=arch,
    )
    return out


def _hello_app(store: Store, arch: Arch) -> list[Entry]:
    """hello in /usr/local/bin, found only through the PATH in /env (AWS's init would not find it)."""
    return app_entries(
        [],
        ["hello", "one arg"],
        {"HELLO_NAME": "eifbuild", "PATH": "/usr/local/bin"},
        files={"usr/local/bin/hello": _hello(store, arch)},
    )


def _boot(eif: Path, **options: object) -> boot.BootResult:
    """The unpacked boot (x86_64 on microvm unless told: the nitro-enclave machine has its own tests)."""
    if read_eif(eif).arch == "x86_64":
        options.setdefault("machine", "microvm")
    return boot.boot_eif(eif, boot.BootOptions(**options), store=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ARCHES)
def test_hello_runs_and_the_machine_shuts_down(tmp_path: Path, shared_store: Store, arch: Arch) -> None:
    _qemu(arch)
    eif = _eif(tmp_path, arch, bootstrap_entries(_init(shared_store, arch)), _hello_app(shared_store, arch))
    result = _boot(eif, timeout=120)
    assert (result.ok, result.reason) == (True, "shutdown"), result.console
    console = result.console
    assert HELLO_LINE in console
    assert "eifbuild-init: local run (eifbuild.local=1)" in console
    assert "heartbeat skipped (eifbuild.local=1)" in console
    assert "eifbuild-init: command exited with status 0" in console
    assert result.returncode == 0  # QEMU exited by itself (power-off on aarch64, reboot on x86)


def test_x86_pc_machine_boots_too(tmp_path: Path, shared_store: Store) -> None:
    _qemu("x86_64")
    eif = _eif(
        tmp_path,
        "x86_64",
        bootstrap_entries(_init(shared_store, "x86_64")),
        _hello_app(shared_store, "x86_64"),
    )
    result = _boot(eif, machine="pc", timeout=120)
    assert (result.ok, result.reason, result.returncode) == (True, "shutdown", 0), result.console
    assert HELLO_LINE in result.console


def test_cli_stops_at_the_expected_text(
    tmp_path: Path, shared_store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    _qemu("aarch64")
    eif = _eif(
        tmp_path,
        "aarch64",
        bootstrap_entries(_init(shared_store, "aarch64")),
        _hello_app(shared_store, "aarch64"),
    )
    args = ["boot", str(eif), "--expect", "Hello from the enclave", "--timeout", "120"]
    assert main([*args, "--cache", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "Hello from the enclave" in out
    assert out.splitlines()[-1].startswith("PASS: saw 'Hello from the enclave' (")
    assert "command exited" not in out  # stopped at the text, not at the end


def _broken_app(hello: Path, *, cmd: bytes, drop: str = "") -> list[Entry]:
    dirs = [d for d in ("dev", "proc", "run", "sys", "tmp") if d != drop]
    return [
        Entry.file("cmd", cmd),
        Entry.file("env", b"HELLO_NAME=broken\n"),
        Entry.directory("rootfs"),
        Entry.directory("rootfs/bin"),
        Entry.file("rootfs/bin/hello", hello, mode=0o755),
        *(Entry.directory(f"rootfs/{d}") for d in dirs),
    ]


@pytest.mark.parametrize("arch", ARCHES)
def test_missing_rootfs_dev_panics_with_init_s_message(
    tmp_path: Path, shared_store: Store, arch: Arch
) -> None:
    _qemu(arch)
    app = _broken_app(_hello(shared_store, arch), cmd=b"/bin/hello\n", drop="dev")
    eif = _eif(tmp_path, arch, bootstrap_entries(_init(shared_store, arch)), app)
    result = _boot(eif, expect="Hello from", timeout=120)
    assert (result.ok, result.reason) == (False, "panic"), result.console
    assert result.detail.startswith(
        "kernel panic after 'eifbuild-init: fatal: mount devtmpfs on /rootfs/dev: No such file or directory': "
        "Kernel panic - not syncing: Attempted to kill init!"
    )


def test_a_wrong_command_fails_with_init_s_message(tmp_path: Path, shared_store: Store) -> None:
    _qemu("x86_64")
    app = _broken_app(_hello(shared_store, "x86_64"), cmd=b"/bin/nope\n")
    eif = _eif(tmp_path, "x86_64", bootstrap_entries(_init(shared_store, "x86_64")), app)
    result = _boot(eif, timeout=120)
    assert (result.ok, result.reason) == (False, "app-failed"), result.console
    assert result.detail == "eifbuild-init: cannot run '/bin/nope': No such file or directory"
    assert "eifbuild-init: command exited with status 127" in result.console


def test_a_missing_cmd_file_is_fatal(tmp_path: Path, shared_store: Store) -> None:
    _qemu("aarch64")
    app = [e for e in _broken_app(_hello(shared_store, "aarch64"), cmd=b"x\n") if e.path != "cmd"]
    eif = _eif(tmp_path, "aarch64", bootstrap_entries(_init(shared_store, "aarch64")), app)
    result = _boot(eif, timeout=120)
    assert result.reason == "panic", result.console
    assert (
        "eifbuild-init: fatal: open /cmd (the app ramdisk must contain /cmd and /env): "
        "No such file or directory" in result.detail
    )


def test_local_init_replaces_the_eif_s_init(tmp_path: Path, shared_store: Store) -> None:
    """An EIF whose init cannot boot locally (here: hello as /init) boots with --local-init."""
    _qemu("aarch64")
    bootstrap = bootstrap_entries(_hello(shared_store, "aarch64"))
    eif = _eif(tmp_path, "aarch64", bootstrap, _hello_app(shared_store, "aarch64"))
    as_built = _boot(eif, timeout=120)
    assert as_built.reason == "panic", as_built.console
    assert "Hello from the enclave, stranger" in as_built.console  # hello ran as PID 1, then exited
    replaced = boot.boot_eif(eif, boot.BootOptions(timeout=120, local_init=True), store=shared_store)
    assert (replaced.ok, replaced.reason) == (True, "shutdown"), replaced.console
    assert HELLO_LINE in replaced.console


def test_timeout_kills_qemu_mid_boot(tmp_path: Path, shared_store: Store) -> None:
    _qemu("x86_64")
    eif = _eif(
        tmp_path,
        "x86_64",
        bootstrap_entries(_init(shared_store, "x86_64")),
        _hello_app(shared_store, "x86_64"),
    )
    result = _boot(eif, expect="Hello from", timeout=0.3)
    assert (result.ok, result.reason, result.returncode) == (False, "timeout", None)
    assert HELLO_LINE not in result.console


def test_without_the_local_flag_a_missing_vsock_peer_is_fatal(tmp_path: Path, shared_store: Store) -> None:
    """Fail closed: only eifbuild.local=1 lets init skip the heartbeat (boot() always adds it)."""
    _qemu("aarch64")
    eif = _eif(
        tmp_path,
        "aarch64",
        bootstrap_entries(_init(shared_store, "aarch64")),
        _hello_app(shared_store, "aarch64"),
    )
    image = read_eif(eif)
    kernel, initrd = boot.prepare(image, tmp_path)
    cmd = qemu.unpacked_command(
        qemu.find_qemu("aarch64"),
        "aarch64",
        kernel=kernel,
        initrd=initrd,
        cmdline=f"{image.cmdline} console=ttyAMA0 panic=-1",
        machine="virt",
        memory_mib=256,
        accel="tcg",
    )
    result = run_qemu(cmd, expect="Hello from", timeout=120)
    assert result.reason == "panic", result.console
    assert "eifbuild-init: local run" not in result.console
    assert result.detail.startswith(
        "kernel panic after 'eifbuild-init: fatal: heartbeat: connect to vsock CID 3 port 9000: No such device'"
    )


def test_a_bare_name_falls_back_to_aws_s_fixed_path(tmp_path: Path, shared_store: Store) -> None:
    _qemu("aarch64")
    app = app_entries(
        [], ["hello"], {"HELLO_NAME": "fallback"}, files={"bin/hello": _hello(shared_store, "aarch64")}
    )
    eif = _eif(tmp_path, "aarch64", bootstrap_entries(_init(shared_store, "aarch64")), app)
    result = _boot(eif, expect="Hello from the enclave, fallback!", timeout=120)
    assert result.ok, result.console


def test_a_bare_name_not_found_names_both_paths(tmp_path: Path, shared_store: Store) -> None:
    _qemu("aarch64")
    app = app_entries(
        [], ["nope"], {"PATH": "/usr/local/bin"}, files={"bin/hello": _hello(shared_store, "aarch64")}
    )
    eif = _eif(tmp_path, "aarch64", bootstrap_entries(_init(shared_store, "aarch64")), app)
    result = _boot(eif, timeout=120)
    assert (result.ok, result.reason) == (False, "app-failed"), result.console
    assert result.detail == (
        "eifbuild-init: cannot run 'nope': not found in PATH=/usr/local/bin (nor in /sbin:/usr/sbin:/bin:/usr/bin)"
    )
