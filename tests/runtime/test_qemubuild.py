"""``eifbuild qemu build``: the shipped build script, run for real (a prefix holding a working
binary is reused; a version apt does not know fails with one line)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eifbuild.cli import main
from eifbuild.commands.common import EXIT_ERROR, EXIT_OK
from eifbuild.runtime import qemubuild


def _prefix_with_qemu(prefix: Path, machines: str) -> Path:
    binary = prefix / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    lines = "".join(f"echo '{m}  a machine'\n" for m in machines.split())
    binary.write_text(f"#!/bin/sh\necho 'Supported machines are:'\n{lines}")
    binary.chmod(0o755)
    return binary


def test_the_script_ships_in_the_package() -> None:
    assert qemubuild.SCRIPT.is_file()
    assert qemubuild.SCRIPT.parent == Path(qemubuild.__file__).parent
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"eifbuild.runtime" = ["build-qemu-nitro.sh"]' in pyproject


def test_a_prefix_with_a_working_binary_is_reused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    binary = _prefix_with_qemu(tmp_path / "prefix", "microvm nitro-enclave")
    assert main(["qemu", "build", "--prefix", str(tmp_path / "prefix"), "--no-deps"]) == EXIT_OK
    out, err = capfd.readouterr()
    assert out.splitlines() == [str(binary)]
    assert f"build-qemu-nitro: reusing {binary}" in err
    assert (tmp_path / "prefix" / "share" / "qemu").is_dir()  # Debian's firmware is linked there


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="needs apt-cache (Debian)")
def test_a_version_apt_does_not_know_is_one_error_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _prefix_with_qemu(tmp_path / "prefix", "microvm")  # no nitro-enclave: a build is needed
    argv = ["qemu", "build", "--prefix", str(tmp_path / "prefix"), "--version", "1:0.0+ds-0"]
    assert main(argv) == EXIT_ERROR
    _, err = capfd.readouterr()
    assert "build-qemu-nitro: apt knows no source qemu=1:0.0+ds-0" in err
    assert err.splitlines()[-1].startswith("error: eifbuild qemu build failed (exit 1)")


def test_the_script_runs_as_the_command_line_runs_it(tmp_path: Path) -> None:
    """`python -m eifbuild qemu build` in a child process: the path is stdout's only line."""
    binary = _prefix_with_qemu(tmp_path / "prefix", "nitro-enclave")
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "eifbuild",
            "qemu",
            "build",
            "--prefix",
            str(tmp_path / "prefix"),
            "--no-deps",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{binary}\n"
