"""``eifbuild boot`` without QEMU: files it prepares, the console watcher, verdicts, errors.

The watcher runs against a stand-in console process (a Python script printing what a guest
would), which can hang, panic or stop on cue; real QEMU boots are in ``test_boot_qemu.py``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import zlib
from typing import TYPE_CHECKING

import pytest

from eifbuild.cli import main
from eifbuild.eif import read_eif
from eifbuild.eif.metadata import make_metadata
from eifbuild.eif.writer import write_eif
from eifbuild.errors import ToolError, UsageError
from eifbuild.ramdisk import bootstrap_entries, read_cpio, write_cpio_file
from eifbuild.runtime import _qemu as qemu
from eifbuild.runtime import boot
from eifbuild.runtime._console import run_qemu

if TYPE_CHECKING:
    from pathlib import Path

    from eifbuild.arch import Arch

AWS_X86_CMDLINE = (
    "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp "
    "i8042.dumbkbd random.trust_cpu=on"
)


def _eif(tmp_path: Path, *, arch: Arch = "x86_64", compression: str = "none", nsm: bool = True) -> Path:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"not really a kernel")
    first = tmp_path / "bootstrap.cpio"
    write_cpio_file(
        bootstrap_entries(b"old init", b"NSM MODULE" if nsm else None),
        first,
        mtime=0,
        compression=compression,  # type: ignore[arg-type]
    )
    second = tmp_path / "app.cpio"
    second.write_bytes(b"APP!!")  # 5 bytes: the initrd must pad it
    out = tmp_path / "test.eif"
    write_eif(
        out,
        kernel=kernel,
        cmdline=AWS_X86_CMDLINE,
        ramdisks=[first, second],
        metadata=make_metadata(kernel=kernel),
        arch=arch,
    )
    return out


# -- what QEMU is given -----------------------------------------------------------------------------
def test_local_cmdline_adds_what_a_local_run_needs() -> None:
    assert boot.local_cmdline(AWS_X86_CMDLINE, "x86_64", "microvm") == (
        AWS_X86_CMDLINE + " eifbuild.local=1 reboot=t panic=-1"
    )
    assert boot.local_cmdline("quiet", "x86_64", "pc") == "quiet eifbuild.local=1 console=ttyS0 panic=-1"
    assert boot.local_cmdline("console=ttyS0 root=/dev/ram0", "aarch64", "virt") == (
        "console=ttyS0 root=/dev/ram0 eifbuild.local=1 console=ttyAMA0 panic=-1"
    )


def test_ramdisks_are_concatenated_with_4_byte_alignment() -> None:
    out = io.BytesIO()
    total = boot.write_initrd(iter([iter([b"abc"]), iter([b"de", b"f", b"gh"]), iter([b"wxyz"])]), out)
    assert out.getvalue() == b"abc\0defgh\0\0\0wxyz"
    assert total == 16


def test_prepare_writes_the_kernel_and_the_padded_ramdisks(tmp_path: Path) -> None:
    image = read_eif(_eif(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    kernel, initrd = boot.prepare(image, work)
    assert kernel.read_bytes() == b"not really a kernel"
    data = initrd.read_bytes()
    first = (tmp_path / "bootstrap.cpio").read_bytes()
    assert data == first + b"\0" * (-len(first) % 4) + b"APP!!\0\0\0"


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_local_init_replaces_init_and_keeps_nsm(tmp_path: Path, compression: str) -> None:
    image = read_eif(_eif(tmp_path, compression=compression))
    init = tmp_path / "new-init"
    init.write_bytes(b"eifbuild init")
    work = tmp_path / "work"
    work.mkdir()
    _, initrd = boot.prepare(image, work, init=init)
    data = initrd.read_bytes()
    members = {m.name: m for m in read_cpio(io.BytesIO(data), data=True)}
    assert members["init"].data == b"eifbuild init"
    assert members["init"].mode == 0o100755
    assert members["nsm.ko"].data == b"NSM MODULE"
    assert sorted(members) == ["dev", "init", "nsm.ko"]
    assert data.endswith(b"APP!!\0\0\0")
    assert (len(data) - 8) % 4 == 0


def test_local_init_without_nsm_adds_none(tmp_path: Path) -> None:
    image = read_eif(_eif(tmp_path, nsm=False))
    init = tmp_path / "new-init"
    init.write_bytes(b"eifbuild init")
    names = [m.name for m in read_cpio(io.BytesIO(boot.local_bootstrap(image, init)))]
    assert names == ["dev", "init"]


def test_qemu_command_per_arch(tmp_path: Path) -> None:
    k, i = tmp_path / "k", tmp_path / "i"
    x86 = qemu.unpacked_command(
        "qemu-system-x86_64",
        "x86_64",
        kernel=k,
        initrd=i,
        cmdline="c",
        machine="microvm",
        memory_mib=256,
        accel="tcg",
    )
    assert x86[:3] == ["qemu-system-x86_64", "-M", "microvm"]
    assert "-cpu" not in x86
    at = x86.index("-no-reboot")
    assert x86[at : at + 4] == ["-no-reboot", "-nodefaults", "-serial", "stdio"]
    arm = qemu.unpacked_command(
        "qemu-system-aarch64",
        "aarch64",
        kernel=k,
        initrd=i,
        cmdline="c",
        machine="virt",
        memory_mib=512,
        accel="tcg",
    )
    assert arm[:5] == ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57"]
    assert arm[arm.index("-append") + 1] == "c"
    assert arm[arm.index("-m") + 1] == "512"


def test_missing_qemu_gives_an_install_hint(tmp_path: Path) -> None:
    with pytest.raises(ToolError) as err:
        qemu.find_qemu("aarch64", "no-such-qemu-binary")
    assert str(err.value) == (
        "no-such-qemu-binary not found: install QEMU to boot aarch64 images "
        "(Debian/Ubuntu: apt-get install qemu-system-arm; Fedora: dnf install qemu-system-aarch64)"
    )


def test_cli_without_qemu_exits_2_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    eif = _eif(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("EIFBUILD_QEMU_X86_64", raising=False)
    assert main(["boot", str(eif), "--cache", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: qemu-system-x86_64 not found: install QEMU to boot x86_64 images "
        "(Debian/Ubuntu: apt-get install qemu-system-x86; Fedora: dnf install qemu-system-x86_64)\n"
    )


def test_bad_machine_for_the_arch_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eif = _eif(tmp_path, arch="aarch64")
    assert main(["boot", str(eif), "--machine", "microvm"]) == 2
    assert "key '--machine': machine 'microvm' for aarch64: expected one of virt" in capsys.readouterr().err


def test_memory_defaults_to_four_times_the_eif_and_at_least_256_mib(tmp_path: Path) -> None:
    image = read_eif(_eif(tmp_path))
    assert boot.memory_for(image, None) == 256
    assert boot.memory_for(image, 1024) == 1024
    big = dataclasses.replace(image, file_size=200 * (1 << 20) + 1)
    assert boot.memory_for(big, None) == 4 * 201


def test_memory_leaves_room_for_gzip_ramdisks_unpacked(tmp_path: Path) -> None:
    """A gzip ramdisk unpacks to several times its size: 4x the EIF was not enough (issue #26's trial:
    'Initramfs unpacking failed: write error' at the advised memory)."""
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"K" * 4096)
    packed = tmp_path / "app.cpio.gz"
    zipper = zlib.compressobj(6, zlib.DEFLATED, 31)  # a gzip stream: its trailer says 300 MiB
    with packed.open("wb") as fh:
        for _ in range(300):
            fh.write(zipper.compress(bytes(1 << 20)))
        fh.write(zipper.flush())
    eif = tmp_path / "gz.eif"
    write_eif(
        eif,
        kernel=kernel,
        cmdline="c",
        ramdisks=[packed],
        metadata=make_metadata(kernel=kernel),
        arch="x86_64",
    )
    image = read_eif(eif)
    assert image.file_size < 2 << 20
    assert boot.memory_for(image, None) == 300 + (image.file_size + (1 << 20) - 1) // (1 << 20) + 96


# -- watching a console -------------------------------------------------------------------------------
def _console(script: str, pidfile: Path) -> list[str]:
    """A stand-in for QEMU: records its pid, then runs ``script`` (print/sleep statements)."""
    prelude = f"import os, sys, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
    prelude += "def say(s):\n    sys.stdout.write(s); sys.stdout.flush()\n"
    return [sys.executable, "-c", prelude + script]


def _gone(pidfile: Path) -> bool:
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_expect_stops_at_the_text_even_split_across_reads_and_kills_qemu(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = "say('Booting...\\r\\nHel'); time.sleep(0.3); say('lo from the enclave\\r\\n'); time.sleep(60)"
    seen: list[str] = []
    result = run_qemu(_console(script, pidfile), expect="Hello from", timeout=30, console=seen.append)
    assert (result.ok, result.reason, result.detail) == (True, "expected", "saw 'Hello from'")
    assert result.returncode is None  # killed, not exited
    assert _gone(pidfile)
    assert "".join(seen) == "Booting...\nHello from the enclave\n"
    assert result.seconds < 30


def test_a_panic_fails_with_init_s_last_words(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (
        "say('eifbuild-init: fatal: mount devtmpfs on /rootfs/dev: No such file or directory\\r\\n');"
        "say('[    1.2] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\\r\\n');"
        "time.sleep(60)"
    )
    result = run_qemu(_console(script, pidfile), expect="never", timeout=30)
    assert not result.ok
    assert result.reason == "panic"
    assert result.detail == (
        "kernel panic after 'eifbuild-init: fatal: mount devtmpfs on /rootfs/dev: No such file or directory': "
        "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200"
    )
    assert _gone(pidfile)
    assert result.verdict.startswith("FAIL: kernel panic after ")


def test_timeout_kills_a_silent_qemu(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    result = run_qemu(_console("time.sleep(60)", pidfile), expect="x", timeout=0.5)
    assert (result.ok, result.reason, result.detail) == (
        False,
        "timeout",
        "timed out after 0.5 s waiting for 'x'",
    )
    assert result.returncode is None
    assert _gone(pidfile)


def test_timeout_kills_a_qemu_that_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsay('.')\ntime.sleep(60)"
    result = run_qemu(_console(script, pidfile), expect=None, timeout=0.5)
    assert result.reason == "timeout"
    assert _gone(pidfile)


def test_a_clean_shutdown_without_expect_passes(tmp_path: Path) -> None:
    script = "say('Hello\\neifbuild-init: command exited with status 0\\neifbuild-init: rebooting\\n')"
    result = run_qemu(_console(script, tmp_path / "pid"), expect=None, timeout=30)
    assert (result.ok, result.reason, result.returncode) == (True, "shutdown", 0)
    assert result.verdict.startswith("PASS: the machine shut down (")


@pytest.mark.parametrize(
    ("output", "detail"),
    [
        (
            "eifbuild-init: cannot run '/bin/nope': No such file or directory\n"
            "eifbuild-init: command exited with status 127\n",
            "eifbuild-init: cannot run '/bin/nope': No such file or directory",
        ),
        ("eifbuild-init: command exited with status 3\n", "eifbuild-init: command exited with status 3"),
        ("eifbuild-init: command killed by signal 11\n", "eifbuild-init: command killed by signal 11"),
    ],
)
def test_a_failed_command_fails_the_boot(tmp_path: Path, output: str, detail: str) -> None:
    result = run_qemu(_console(f"say({output!r})", tmp_path / "pid"), expect=None, timeout=30)
    assert (result.ok, result.reason, result.detail) == (False, "app-failed", detail)


def test_exit_before_the_expected_text_fails(tmp_path: Path) -> None:
    result = run_qemu(_console("say('booted\\n')", tmp_path / "pid"), expect="Hello", timeout=30)
    assert (result.ok, result.reason) == (False, "no-expect")
    assert result.detail == "QEMU exited (status 0) before 'Hello' appeared"


def test_a_ramdisk_the_kernel_could_not_unpack_is_named_as_the_cause(tmp_path: Path) -> None:
    script = (
        "say('Initramfs unpacking failed: write error\\n'); "
        "say('eifbuild-init: cannot run /app/start.sh: No such file or directory\\n'); "
        "say('Kernel panic - not syncing: Attempted to kill init!\\n')"
    )
    result = run_qemu(_console(script, tmp_path / "pid"), expect=None, timeout=30)
    assert (result.ok, result.reason) == (False, "initramfs")
    assert result.detail == (
        "the kernel could not unpack the ramdisks (Initramfs unpacking failed: write error): "
        "give the guest more memory (--memory MIB)"
    )


def test_qemu_failing_to_start_the_guest_fails(tmp_path: Path) -> None:
    script = "sys.stderr.write('qemu: could not load kernel\\n'); sys.exit(1)"
    result = run_qemu(_console(script, tmp_path / "pid"), expect=None, timeout=30)
    assert (result.ok, result.detail) == (False, "QEMU exited with status 1")
    assert "could not load kernel" in result.console


# -- the nitro-enclave machine --------------------------------------------------------------------------
def _fake_qemu(tmp_path: Path, machines: str) -> str:
    """A script answering ``-M help`` like a QEMU with these machines."""
    script = tmp_path / "qemu-system-x86_64"
    lines = "".join(f"echo '{m}  a machine'\n" for m in machines.split())
    script.write_text(f"#!/bin/sh\necho 'Supported machines are:'\n{lines}")
    script.chmod(0o755)
    return str(script)


def test_x86_boots_on_nitro_enclave_where_the_qemu_has_it(tmp_path: Path) -> None:
    with_it = _fake_qemu(tmp_path, "microvm nitro-enclave pc")
    assert boot.choose_machine("x86_64", with_it, boot.BootOptions()) == "nitro-enclave"
    assert boot.choose_machine("x86_64", with_it, boot.BootOptions(machine="microvm")) == "microvm"
    assert boot.choose_machine("x86_64", with_it, boot.BootOptions(local_init=True)) == "microvm"
    assert boot.choose_machine("aarch64", with_it, boot.BootOptions()) == "virt"
    (tmp_path / "old").mkdir()
    without = _fake_qemu(tmp_path / "old", "microvm pc")
    assert boot.choose_machine("x86_64", without, boot.BootOptions()) == "microvm"


def test_nitro_only_options_need_that_machine(tmp_path: Path) -> None:
    with_it = _fake_qemu(tmp_path, "microvm nitro-enclave")
    with pytest.raises(UsageError, match="--attest needs QEMU's nitro-enclave machine"):
        boot.choose_machine("x86_64", with_it, boot.BootOptions(attest=True, machine="microvm"))
    with pytest.raises(UsageError, match="--vsock-forward needs QEMU's nitro-enclave machine"):
        boot.choose_machine("aarch64", with_it, boot.BootOptions(vsock_forwards=("5=unix:/x",)))
    with pytest.raises(
        UsageError, match=r"--publish needs QEMU's nitro-enclave machine \(vsock; x86_64 only\)"
    ):
        boot.choose_machine("x86_64", with_it, boot.BootOptions(publishes=("8080:5000",), machine="microvm"))
    with pytest.raises(UsageError, match="--local-init changes the ramdisks"):
        boot.choose_machine("x86_64", with_it, boot.BootOptions(local_init=True, machine="nitro-enclave"))


def test_a_qemu_without_the_machine_says_how_to_get_one(tmp_path: Path) -> None:
    without = _fake_qemu(tmp_path, "microvm pc")
    with pytest.raises(ToolError) as err:
        boot.choose_machine("x86_64", without, boot.BootOptions(attest=True))
    assert str(err.value) == (
        f"{without} has no nitro-enclave machine (QEMU >= 9.2 built with libcbor; Debian's builds lack it): "
        "build one with 'eifbuild qemu build' and pass --qemu PATH or set EIFBUILD_QEMU_X86_64"
    )


def test_the_qemu_comes_from_the_option_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _fake_qemu(tmp_path, "nitro-enclave")
    monkeypatch.setenv("EIFBUILD_QEMU_X86_64", fake)
    assert qemu.find_qemu("x86_64") == fake
    assert qemu.find_qemu("x86_64", sys.executable) == sys.executable


def test_the_nitro_command_boots_the_eif_file_itself(tmp_path: Path) -> None:
    cmd = qemu.nitro_command(
        "qemu",
        eif=tmp_path / "app.eif",
        vsock_socket=tmp_path / "v.sock",
        append="reboot=t panic=-1",
        memory_mib=512,
        accel="tcg",
    )
    text = " ".join(cmd)
    assert "-M nitro-enclave,vsock=vsock0,id=eifbuild-boot -accel tcg -m 512 -smp 1" in text
    assert f"-chardev socket,id=vsock0,path={tmp_path / 'v.sock'}" in text
    assert cmd[-4:] == ["-kernel", str(tmp_path / "app.eif"), "-append", "reboot=t panic=-1"]
    assert "-initrd" not in cmd
    extra = qemu.nitro_command(
        "qemu",
        eif=tmp_path / "a",
        vsock_socket=tmp_path / "s",
        append="",
        memory_mib=1,
        accel="tcg",
        extra_initrd=tmp_path / "more.cpio",
    )
    assert extra[extra.index("-initrd") + 1] == str(tmp_path / "more.cpio")


def test_the_verdict_names_the_machine(tmp_path: Path) -> None:
    result = run_qemu(_console("say('ok\\n')", tmp_path / "pid"), expect="ok", timeout=30)
    noted = dataclasses.replace(result, notes=("-M nitro-enclave", "heartbeat answered"))
    assert noted.verdict.startswith("PASS: saw 'ok' (")
    assert noted.verdict.endswith(" s, -M nitro-enclave, heartbeat answered)")


def test_qemu_s_own_error_line_is_in_the_verdict(tmp_path: Path) -> None:
    script = (
        "sys.stderr.write('qemu-system-x86_64: CRC mismatch. Expected 1 but header has 2\\n'); sys.exit(1)"
    )
    result = run_qemu(_console(script, tmp_path / "pid"), expect=None, timeout=30)
    assert result.detail == "QEMU exited with status 1: CRC mismatch. Expected 1 but header has 2"
