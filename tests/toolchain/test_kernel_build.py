"""Proof that the committed demo kernels are reproducible from source: rebuild both, compare bytes.

Minutes per arch, so opt-in: ``pytest --run-kernel-build tests/toolchain/test_kernel_build.py -s``. Uses an
installed ``/usr/src/linux-source-6.12.tar.xz`` when it is the tarball the recipe records, else
fetches Debian's linux-source-6.12 .deb (154 MB) with ``apt-get download``. Every build is also
linted (``build_from_recipe``): the demo kernels must come out clean.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import require_tool

from eifbuild.arch import ARCHES, Arch, info
from eifbuild.plan.kernelrecipe import build_from_recipe, parse_kernel_build
from eifbuild.sources import load_recipe
from eifbuild.store import Store
from eifbuild.toolchain.kernel import PREREQUISITES
from eifbuild.util.fsutil import hash_file

pytestmark = pytest.mark.kernel_build

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "recipes" / "demo.toml"
INSTALLED = Path("/usr/src/linux-source-6.12.tar.xz")  # where Debian's linux-source-6.12 puts it


@pytest.mark.parametrize("arch", ARCHES)
def test_demo_kernel_rebuilds_bit_identical(tmp_path: Path, arch: Arch) -> None:
    for tool in PREREQUISITES:
        require_tool(tool)
    kr = parse_kernel_build(load_recipe(DEMO), arch)
    tarball = INSTALLED if INSTALLED.is_file() and hash_file(INSTALLED) == kr.tarball_sha256 else None
    started = time.monotonic()
    built = build_from_recipe(DEMO, arch, store=Store(tmp_path / "store"), tarball=tarball)
    print(f"\n{arch}: rebuilt in {time.monotonic() - started:.0f} s: {built.build.image_sha256}")
    committed = REPO / "examples" / "kernel" / arch
    image = info(arch).kernel_image
    assert built.build.image_sha256 == kr.expected_sha256
    assert built.build.image.read_bytes() == (committed / image).read_bytes()
    assert built.build.config.read_bytes() == (committed / f"{image}.config").read_bytes()
    assert built.lint.findings == ()
