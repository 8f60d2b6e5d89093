"""eifbuild's own init (eifbuild/init/init.c): strict compile for both arches, fail-closed behaviour.

Its boot behaviour (mounts, /cmd and /env, PATH lookup, local mode, messages) is tested by real
boots in ``test_boot_qemu.py``.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest
from conftest import require_tool

from eifbuild.arch import ARCHES, Arch
from eifbuild.runtime.boot import EIFBUILD_INIT_C
from eifbuild.store import Store
from eifbuild.toolchain._elf import read_elf
from eifbuild.toolchain.zig import compile_c_binary

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

STRICT = ["-Wall", "-Wextra", "-Werror"]


@pytest.mark.parametrize("arch", ARCHES)
def test_init_compiles_warning_free(shared_store: Store, arch: Arch) -> None:
    binary = compile_c_binary(shared_store, [EIFBUILD_INIT_C], arch=arch, cflags=STRICT, output_name="init")
    elf = read_elf(binary.path, "init")
    assert elf.interpreter is None
    assert binary.size < 200_000


def test_init_is_package_data() -> None:
    assert EIFBUILD_INIT_C.is_file()
    assert EIFBUILD_INIT_C.read_text().startswith("/*\n * eifbuild init: PID 1 of a Nitro Enclave image")


def test_outside_an_enclave_init_fails_closed_with_a_message(shared_store: Store, tmp_path: Path) -> None:
    """Run as an ordinary process in a user namespace: the first mount fails, init exits at once."""
    unshare = require_tool("unshare")
    if subprocess.run([unshare, "-Urm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("user namespaces are not available here")
    binary = compile_c_binary(
        shared_store, [EIFBUILD_INIT_C], arch="x86_64", cflags=STRICT, output_name="init"
    )
    proc = subprocess.run(
        [unshare, "-Urm", str(binary.path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert proc.stderr == "eifbuild-init: fatal: mount devtmpfs on /dev: Operation not permitted\n"
    assert proc.returncode == 1  # EPERM: exit with the errno, like AWS's init
