"""Shared test configuration.

Slow tests (real QEMU boots, fuzzing, GiB-sized packs, real registries) are marked ``slow`` and
skipped by default; ``--run-slow`` or the environment variable ``CI=true`` (set by CI) runs them.
Tests that need an external tool call :func:`require_tool`: it skips locally when the tool is
missing, but fails under CI, where ``.ci/run`` must have installed it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import pytest
from s3_helpers import THROWAWAY_AWS_ENV, Keys, MotoServer, S3Target, make_key, settings_for
from source_helpers import LocalServer

from eifbuild.store import Store

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ceph_rgw import CephRgw
    from softhsm_helpers import Token

    from eifbuild.store.remote import CacheSettings

# AWS eif_build 0.3.1 outputs kept in the repo (tests/vectors/eif_build-0.5/README.md says how they were made)
VECTORS = Path(__file__).resolve().parent / "vectors" / "eif_build-0.5"

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (CI=true does too)")
    parser.addoption("--run-kernel-build", action="store_true", help="rebuild the demo kernels from source")


def pytest_configure(config: pytest.Config) -> None:
    # Every test store shares one zig global cache, so zig builds musl once per target and machine
    # (a minute each), not once per test. Tests that need a cold cache remove the variable.
    os.environ.setdefault("EIFBUILD_ZIG_CACHE", platformdirs.user_cache_dir("eifbuild-tests") + "/zig-global")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow") or IN_CI
    run_kernel = config.getoption("--run-kernel-build")
    skip_slow = pytest.mark.skip(reason="slow: use --run-slow (or CI=true)")
    skip_kernel = pytest.mark.skip(reason="kernel rebuild takes minutes: use --run-kernel-build")
    for item in items:
        if "kernel_build" in item.keywords and not run_kernel:
            item.add_marker(skip_kernel)
        elif "slow" in item.keywords and not run_slow:
            item.add_marker(skip_slow)


def require_tool(name: str) -> str:
    """Path of an external tool; skip when missing locally, fail in CI (the install step is broken)."""
    found = shutil.which(name)
    if found:
        return found
    if IN_CI:
        pytest.fail(f"{name} is not installed: .ci/run must install it")
    pytest.skip(f"{name} is not installed")
    raise AssertionError  # unreachable; pytest.skip raises


@pytest.fixture(autouse=True)
def _private_download_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own download cache, never the user's (a test may still override this)."""
    monkeypatch.setenv("EIFBUILD_SOURCES_DIR", str(tmp_path_factory.mktemp("eifbuild-sources")))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty store of the test's own."""
    return Store(tmp_path / "store")


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the whole run: what one test compiles (zig), every later test finds."""
    return Store(tmp_path_factory.mktemp("shared-store"))


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A real HTTP server on 127.0.0.1 serving what a test routes to it."""
    with LocalServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    return VECTORS


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto's server (S3, KMS) on 127.0.0.1, with throw-away AWS credentials in the environment."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in THROWAWAY_AWS_ENV.items():
            mp.setenv(name, value)
        server = MotoServer().start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def ceph_rgw() -> Iterator[CephRgw]:
    """One throw-away Ceph cluster with RADOS Gateway (HTTP and HTTPS) for the whole run; skipped
    without Debian's ceph-mon/ceph-osd/radosgw, a failure in CI (.ci/run installs them)."""
    import ceph_rgw as rgw  # noqa: PLC0415

    if not rgw.available():
        if IN_CI:
            pytest.fail("ceph-mon, ceph-osd or radosgw is not installed: .ci/run must install them")
        pytest.skip("Ceph RGW is not installed (apt-get install ceph-mon ceph-osd radosgw)")
    with rgw.CephRgw(
        THROWAWAY_AWS_ENV["AWS_ACCESS_KEY_ID"], THROWAWAY_AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    ) as cluster:
        yield cluster


S3_SERVERS = ("moto", "ceph-http", "ceph-https")


@pytest.fixture(params=S3_SERVERS)
def s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> S3Target:
    """Each real S3 server in turn: moto, then Ceph RGW over HTTP and over HTTPS (its certificate
    trusted through the target's ``ca_bundle``), with the throw-away credentials in the environment."""
    for name, value in THROWAWAY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    if request.param == "moto":
        server: MotoServer = request.getfixturevalue("moto")
        return server.target
    cluster: CephRgw = request.getfixturevalue("ceph_rgw")
    if request.param == "ceph-http":
        return S3Target("ceph-http", cluster.endpoint)
    return S3Target("ceph-https", cluster.https_endpoint, str(cluster.ca_bundle))


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """A throw-away signing key of the remote cache, trusted by ``remote`` and ``moto_remote``."""
    return make_key(tmp_path, "ci-1")


@pytest.fixture
def remote(s3: S3Target, keys: Keys) -> CacheSettings:
    """Remote-cache settings for a fresh bucket on each S3 server in turn."""
    return settings_for(s3, keys)


@pytest.fixture
def moto_remote(moto: MotoServer, keys: Keys) -> CacheSettings:
    """The same on moto only: faults a real server cannot be made to produce, and what only the
    client decides."""
    return settings_for(moto.target, keys)


@pytest.fixture(scope="session")
def nitro_qemu() -> str:
    """A QEMU with the nitro-enclave machine ($EIFBUILD_QEMU_X86_64 or PATH): skipped without one,
    a failure in CI (.ci/run builds one with the script behind `eifbuild qemu build`)."""
    from eifbuild.errors import ToolError  # noqa: PLC0415
    from eifbuild.runtime import _qemu as qemu  # noqa: PLC0415

    try:
        found = qemu.find_qemu("x86_64")
    except ToolError as exc:
        found = str(exc)
    if not qemu.has_nitro_enclave(found):
        why = f"no QEMU with the nitro-enclave machine ({found}): build one with eifbuild qemu build"
        if IN_CI:
            pytest.fail(f"{why}; .ci/run must set EIFBUILD_QEMU_X86_64")
        pytest.skip(why)
    return found


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Token]:
    """The one SoftHSM2 token for in-process PKCS#11 signing: the PKCS#11 library is loaded once
    per process and reads $SOFTHSM2_CONF only then, so every test that signs in this process must
    use this token (a test's own token is seen only by a child process, e.g. a `doit` run)."""
    pytest.importorskip("pkcs11")
    from softhsm_helpers import make_token  # noqa: PLC0415

    util = require_tool("softhsm2-util")
    home = tmp_path_factory.mktemp("softhsm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(home / "softhsm2.conf"))
        mp.delenv("EIFBUILD_PKCS11_PIN", raising=False)
        mp.delenv("EIFBUILD_PKCS11_MODULE", raising=False)
        yield make_token(util, home)
