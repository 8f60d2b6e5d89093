"""A real `doit eif` interrupted by SIGINT (Ctrl-C) or killed by SIGKILL while it writes a large
ramdisk: one line and exit 130 with nothing left behind, or leftovers that the next build,
`store verify` and `store gc` see, count and (but for verify) remove."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eifbuild.store import Store

pytestmark = pytest.mark.slow  # each test packs hundreds of MB

REPO = Path(__file__).resolve().parents[2]
DODO = "from eifbuild.tasks import *  # noqa: F403\n"
# Large enough that packing it takes a while after its temp file appears (sparse on disk).
ROOTFS_FILE_SIZE = 768 << 20

EIF_TOML = f"""\
[eif]
name = "big"
arch = ["x86_64"]
cmdline = "console=ttyS0"
allow_paths_outside = true  # the repo's demo kernel

[bootstrap]
kernel = {{ path = "{REPO / "examples/kernel/x86_64/bzImage"}" }}
init = {{ path = "init.bin" }}
nsm = "none"

[app]
rootfs = "rootfs"
cmd = ["/bin/app"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    root = tmp_path / "app"
    (root / "rootfs" / "bin").mkdir(parents=True)
    (root / "dodo.py").write_text(DODO)
    (root / "eif.toml").write_text(EIF_TOML)
    (root / "init.bin").write_bytes(b"\x7fELF" + bytes(9000))
    app = root / "rootfs" / "bin" / "app"
    app.write_text("#!/bin/sh\necho app\n")
    app.chmod(0o755)
    with open(root / "rootfs" / "big.bin", "wb") as fh:
        fh.truncate(ROOTFS_FILE_SIZE)
    return root


def temp_files(root: Path) -> list[Path]:
    """Every temp file or dir of the store and the output dir."""
    found = [*root.glob("cache/tmp/*"), *root.glob("cache/??/.*.tmp")]
    return found + [p for p in root.glob("build/.*") if p.name.endswith(".tmp")]


def start_build(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doit", "eif"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_writing(root: Path, proc: subprocess.Popen[str]) -> None:
    """Return once the app ramdisk's temp file exists."""
    deadline = time.monotonic() + 300
    while not list(root.glob("cache/tmp/*/out/.ramdisk.cpio.*.tmp")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the app ramdisk was never written"
        time.sleep(0.01)


def signal_while_writing(root: Path, proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Send ``signum`` once the app ramdisk's temp file exists; the build's stdout and stderr."""
    wait_until_writing(root, proc)
    proc.send_signal(signum)
    return proc.communicate(timeout=120)


def run(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False, timeout=600)


def test_ctrl_c_is_one_line_exit_130_and_leaves_no_temp_files(project: Path) -> None:
    proc = start_build(project)
    out, err = signal_while_writing(project, proc, signal.SIGINT)
    assert proc.returncode == 130, out + err
    assert err.splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in out + err
    assert temp_files(project) == []
    assert not (project / "build" / "big-x86_64.eif").exists()


def test_a_killed_build_leaves_garbage_that_the_next_build_reclaims(project: Path) -> None:
    proc = start_build(project)
    signal_while_writing(project, proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    left = temp_files(project)
    assert left
    size = sum(f.stat().st_size for d in left for f in d.rglob("*") if f.is_file())

    verify = run(project, sys.executable, "-m", "eifbuild", "store", "verify")
    assert verify.returncode == 0, verify.stderr
    assert f"1 leftover of a killed build ({size:,} bytes): 'eifbuild store gc' removes them" in verify.stdout
    assert temp_files(project) == left  # verify only reports

    again = run(project, sys.executable, "-m", "doit", "eif")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"store: removed 1 leftover of a killed build ({size:,} bytes)" in again.stderr
    assert temp_files(project) == []
    assert Store(project / "cache").verify() == []


def test_gc_reports_the_garbage_of_a_killed_build(project: Path) -> None:
    proc = start_build(project)
    signal_while_writing(project, proc, signal.SIGKILL)
    [work] = temp_files(project)
    gc = run(project, sys.executable, "-m", "eifbuild", "store", "gc")
    assert gc.returncode == 0, gc.stderr
    assert f"{work.relative_to(project / 'cache')}  " in gc.stdout
    assert gc.stdout.splitlines()[-1].startswith(
        "removed 0 entries (0 bytes) and 1 leftover of a killed build ("
    )
    assert temp_files(project) == []


def test_garbage_of_a_live_build_is_left_alone(project: Path) -> None:
    """A build that is still writing holds its key's lock: a concurrent gc must not touch its files."""
    proc = start_build(project)
    wait_until_writing(project, proc)
    store = Store(project / "cache")
    assert store.reclaim_garbage(dry_run=False) == []
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert os.path.exists(project / "build" / "big-x86_64.eif")
