"""`eifbuild lock` for a registry tag in `[app] oci`, against a real docker-registry (skopeo pushes):
the tag is resolved once into eif.lock (digest + each arch's manifest) and builds use that digest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from oci_helpers import Built, Image, M, sample_image, write_layout
from oci_registry import Registry, free_port

from eifbuild.cli import main
from eifbuild.sources import Lock

DODO = "from eifbuild.tasks import *  # noqa: F403\n"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, dict[str, Built], Path]]:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    root = tmp_path_factory.mktemp("images")
    built = {
        "multi": write_layout(root / "multi", [sample_image("amd64"), sample_image("arm64", "zstd")]),
        "arm": write_layout(root / "arm", [Image([[M("x")]], arch="arm64")]),
        "other": write_layout(root / "other", [Image([[M("other")]], arch="amd64")]),
    }
    reg = Registry(binary, tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        reg.push(skopeo, root / "multi", "v1", "test/multi", all_images=True)
        reg.push(skopeo, root / "arm", "v1", "test/arm")
        yield reg, built, root
    finally:
        reg.stop()


def make_project(root: Path, oci: str, arches: str = '["x86_64", "aarch64"]') -> Path:
    root.mkdir()
    (root / "dodo.py").write_text(DODO)
    (root / "kernel").write_bytes(b"k" * 1000)
    (root / "init").write_bytes(b"i" * 1000)
    (root / "eif.toml").write_text(
        textwrap.dedent(
            f"""\
            [eif]
            name = "hello"
            arch = {arches}
            cmdline = "console=ttyS0"
            [bootstrap]
            kernel = {{ path = "kernel" }}
            init = {{ path = "init" }}
            [app]
            oci = "{oci}"
            """
        )
    )
    return root


def doit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EIFBUILD_CACHE"}
    return subprocess.run(
        [sys.executable, "-m", "doit", *args], cwd=root, capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.slow
def test_lock_pins_a_tag_per_arch_and_builds_use_it(
    tmp_path: Path,
    registry: tuple[Registry, dict[str, Built], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg, built, images = registry
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    ref = f"{reg.host}/test/multi:v1"
    project = make_project(tmp_path / "app", ref)
    monkeypatch.chdir(project)
    # before the lock: the build and a plain `eifbuild lock` (the check) name the flag
    run = doit(project)
    assert run.returncode != 0
    assert "is a tag (it can move) with no pin" in run.stderr
    assert "eifbuild lock --trust-on-first-use" in run.stderr
    assert main(["lock"]) == 2
    assert "eifbuild lock --trust-on-first-use" in capsys.readouterr().err
    assert not (project / "eif.lock").exists()

    assert main(["lock", "--trust-on-first-use"]) == 0
    multi = built["multi"]
    assert capsys.readouterr().out.splitlines() == [
        f"new    image {ref} {multi.digest} aarch64={multi.manifests['arm64']} x86_64={multi.manifests['amd64']}",
        f"wrote {project / 'eif.lock'}",
    ]
    entry = Lock.load(project / "eif.lock").image(ref)
    assert entry is not None
    assert entry.digest == multi.digest
    assert dict(entry.manifests) == {"x86_64": multi.manifests["amd64"], "aarch64": multi.manifests["arm64"]}
    assert main(["lock"]) == 0  # complete and consistent now
    assert capsys.readouterr().out.startswith(f"locked image {ref} {multi.digest}")

    first = doit(project)
    assert first.returncode == 0, first.stdout + first.stderr
    eif = (project / "build" / "hello-x86_64.eif").read_bytes()
    # the tag moves: the build still uses the recorded digest
    reg.push(require_tool("skopeo"), images / "other", "v1", "test/multi")
    (project / "build" / "hello-x86_64.eif").unlink()
    again = doit(project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (project / "build" / "hello-x86_64.eif").read_bytes() == eif

    # a lock whose manifest is not what the digest gives is refused, by the check and the build
    lock = project / "eif.lock"
    lock.write_text(
        lock.read_text().replace(
            f'x86_64 = "{multi.manifests["amd64"]}"', f'x86_64 = "{multi.manifests["arm64"]}"'
        )
    )
    assert main(["lock"]) == 2
    assert f"records manifest {multi.manifests['arm64']} for x86_64" in capsys.readouterr().err
    bad = doit(project)
    assert bad.returncode != 0
    assert f"the lock records manifest {multi.manifests['arm64']}" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_lock_refuses_a_tag_without_the_arch(
    tmp_path: Path,
    registry: tuple[Registry, dict[str, Built], Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg, _, _ = registry
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    project = make_project(tmp_path / "app", f"{reg.host}/test/arm:v1")
    monkeypatch.chdir(project)
    assert main(["lock", "--trust-on-first-use"]) == 2
    err = capsys.readouterr().err
    assert "the image is for linux/arm64, but arch x86_64 needs linux/amd64" in err
    # what was resolved is kept (issue #27): the tag's digest, and no manifest for the arch it lacks
    lock = Lock.load(project / "eif.lock")
    entry = lock.image(f"{reg.host}/test/arm:v1")
    assert entry is not None
    assert entry.digest.startswith("sha256:")
    assert dict(entry.manifests) == {}
    assert main(["lock"]) == 2  # still incomplete: a plain lock says so
    assert "is a tag with no pin for x86_64" in capsys.readouterr().err


@pytest.mark.slow
def test_a_wrong_platform_is_reported_before_compiling(
    tmp_path: Path, registry: tuple[Registry, dict[str, Built], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, built, _ = registry
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    project = make_project(tmp_path / "app", f"{reg.host}/test/arm@{built['arm'].digest}", '["x86_64"]')
    toml = project / "eif.toml"
    toml.write_text(
        toml.read_text().replace('init = { path = "init" }', 'init = { compile = "eifbuild-init" }')
    )
    run = doit(project)
    assert run.returncode != 0
    assert "the image is for linux/arm64, but arch x86_64 needs linux/amd64" in run.stdout + run.stderr
    ran = [line[3:].strip() for line in run.stdout.splitlines() if line.startswith(".  ")]
    assert ran == ["fetch:oci:x86_64"]


@pytest.mark.slow
def test_an_unreachable_registry_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    host = f"127.0.0.1:{free_port()}"
    project = make_project(tmp_path / "app", f"{host}/test/app@sha256:{'2' * 64}", '["x86_64"]')
    run = doit(project)
    assert run.returncode != 0
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: http://{host}/v2/test/app/manifests/sha256:{'2' * 64}: cannot reach the registry: "
        "could not connect: Failed to establish a new connection: [Errno 111] Connection refused"
    ]


@pytest.mark.slow
def test_check_needs_no_registry_for_images_in_the_store(
    tmp_path: Path, registry: tuple[Registry, dict[str, Built], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, built, images = registry
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    (tmp_path / "reg").mkdir()
    own = Registry(require_tool("docker-registry"), tmp_path / "reg")
    own.start()
    try:
        own.push(require_tool("skopeo"), images / "multi", "v1", "test/multi", all_images=True)
        project = make_project(tmp_path / "app", f"{own.host}/test/multi@{built['multi'].digest}")
        first = doit(project)
        assert first.returncode == 0, first.stdout + first.stderr
    finally:
        own.stop()
    check = doit(project, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "reproducible: every EIF and PCR matches" in check.stdout
