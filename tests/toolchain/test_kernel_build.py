"""Proof that the committed demo kernels (tiny and app) are reproducible from source: rebuild, compare bytes.

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
# each profile: its recipe, and the folder holding <arch>/
PROFILES = {
    "tiny": (REPO / "recipes" / "demo.toml", REPO / "examples" / "kernel"),
    "app": (REPO / "recipes" / "demo-app.toml", REPO / "examples" / "kernel" / "app"),
}
INSTALLED = Path("/usr/src/linux-source-6.12.tar.xz")  # where Debian's linux-source-6.12 puts it


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("arch", ARCHES)
def test_demo_kernel_rebuilds_bit_identical(tmp_path: Path, arch: Arch, profile: str) -> None:
    for tool in PREREQUISITES:
        require_tool(tool)
    recipe, committed_dir = PROFILES[profile]
    kr = parse_kernel_build(load_recipe(recipe), arch)
    tarball = INSTALLED if INSTALLED.is_file() and hash_file(INSTALLED) == kr.tarball_sha256 else None
    started = time.monotonic()
    built = build_from_recipe(recipe, arch, store=Store(tmp_path / "store"), tarball=tarball)
    print(f"\n{profile} {arch}: rebuilt in {time.monotonic() - started:.0f} s: {built.build.image_sha256}")
    committed = committed_dir / arch
    image = info(arch).kernel_image
    assert built.build.image_sha256 == kr.expected_sha256
    assert built.build.image.read_bytes() == (committed / image).read_bytes()
    assert built.build.config.read_bytes() == (committed / f"{image}.config").read_bytes()
    assert built.lint.findings == ()
