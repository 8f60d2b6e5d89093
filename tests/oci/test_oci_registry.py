"""Pulling by digest from a real docker-registry (pushed with skopeo), plain and behind token auth."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_tool
from oci_helpers import Image, M, sample_image, sha, tar_dir, write_layout
from oci_registry import Registry, TokenService, free_port, write_htpasswd

from eifbuild.cli import main
from eifbuild.errors import ArchiveError, ConfigError, FetchError, HashMismatch
from eifbuild.oci import OciImage, app_command, resolve_image, resolve_tag, rootfs_entries
from eifbuild.ramdisk import layout as ramdisk
from eifbuild.ramdisk import newc as cpio
from eifbuild.store import Store

AUTH_VARS = (
    "EIFBUILD_REGISTRY_USERNAME",
    "EIFBUILD_REGISTRY_PASSWORD",
    "EIFBUILD_REGISTRY_AUTH_FILE",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
)


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in AUTH_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("images")
    single = write_layout(root / "single", [sample_image()], tag="v1")
    multi = write_layout(root / "multi", [sample_image("amd64"), sample_image("arm64", "zstd")], tag="v1")
    arm = write_layout(root / "arm", [Image([[M("x")]], arch="arm64")], tag="v1")
    return {"root": root, "single": single, "multi": multi, "arm": arm}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, images: dict[str, object]) -> Iterator[Registry]:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    reg = Registry(binary, tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        root = images["root"]
        assert isinstance(root, Path)
        reg.push(skopeo, root / "single", "v1", "test/single")
        reg.push(skopeo, root / "multi", "v1", "test/multi", all_images=True)
        reg.push(skopeo, root / "arm", "v1", "test/arm")
        yield reg
    finally:
        reg.stop()


def digest(images: dict[str, object], name: str) -> str:
    built = images[name]
    return built.digest  # type: ignore[attr-defined,no-any-return]


def app_ramdisk(image: OciImage, store: Store) -> bytes:
    argv, env = app_command(image)
    buf = io.BytesIO()
    cpio.write_cpio(
        ramdisk.app_entries(rootfs_entries(image, store), argv, env, modes="preserve"), buf, mtime=0
    )
    return buf.getvalue()


def test_pull_by_digest_equals_layout_and_archive(
    tmp_path: Path, registry: Registry, images: dict[str, object]
) -> None:
    store = Store(tmp_path / "store")
    root = images["root"]
    assert isinstance(root, Path)
    pulled = resolve_image(
        f"{registry.host}/test/single@{digest(images, 'single')}",
        arch="x86_64",
        store=store,
        project_dir=tmp_path,
    )
    assert pulled.source == "registry"
    assert pulled.manifest_digest == digest(images, "single")
    tar_dir(root / "single", tmp_path / "single.tar")
    other = Store(tmp_path / "other")
    from_layout = resolve_image(str(root / "single"), arch="x86_64", store=other, project_dir=tmp_path)
    from_archive = resolve_image(
        "single.tar", arch="x86_64", store=Store(tmp_path / "third"), project_dir=tmp_path
    )
    assert (
        app_ramdisk(pulled, store)
        == app_ramdisk(from_layout, other)
        == app_ramdisk(from_archive, Store(tmp_path / "third"))
    )


def test_multi_arch_index_by_digest(tmp_path: Path, registry: Registry, images: dict[str, object]) -> None:
    store = Store(tmp_path / "store")
    multi = images["multi"]
    ref = f"{registry.host}/test/multi@{digest(images, 'multi')}"
    x86 = resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
    arm = resolve_image(ref, arch="aarch64", store=store, project_dir=tmp_path)
    assert x86.index_digest == arm.index_digest == digest(images, "multi")
    assert (x86.manifest_digest, arm.manifest_digest) == (multi.manifests["amd64"], multi.manifests["arm64"])  # type: ignore[attr-defined]
    # the same tree as gzip (amd64) and zstd (arm64) layers: other blobs, same diff_ids and ramdisk
    assert {x.digest for x in x86.layers}.isdisjoint({x.digest for x in arm.layers})
    assert x86.rootfs_digest == arm.rootfs_digest
    assert app_ramdisk(x86, store) == app_ramdisk(arm, store)


def test_no_network_once_everything_is_stored(tmp_path: Path, images: dict[str, object]) -> None:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    root = images["root"]
    assert isinstance(root, Path)
    reg = Registry(binary, tmp_path / "reg")
    (tmp_path / "reg").mkdir()
    reg.start()
    try:
        reg.push(skopeo, root / "single", "v1", "test/single")
        ref = f"{reg.host}/test/single@{digest(images, 'single')}"
        store = Store(tmp_path / "store")
        first = resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
    finally:
        reg.stop()
    assert resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path) == first


@pytest.mark.slow  # the client retries with backoff (about 8 s) before it gives up
def test_unreachable_registry(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    ref = f"{host}/test/single@sha256:{'2' * 64}"
    with pytest.raises(FetchError) as exc:
        resolve_image(ref, arch="x86_64", store=Store(tmp_path / "s"), project_dir=tmp_path)
    assert str(exc.value).startswith(
        f"http://{host}/v2/test/single/manifests/sha256:{'2' * 64}: cannot reach the registry: could not connect: "
    )
    assert "HTTPConnectionPool" not in str(exc.value)


def test_tags_resolve_for_lock_but_not_in_builds(
    tmp_path: Path, registry: Registry, images: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(tmp_path / "store")
    assert (
        resolve_tag(f"{registry.host}/test/multi:v1")
        == f"{registry.host}/test/multi@{digest(images, 'multi')}"
    )
    with pytest.raises(ConfigError, match=r"not pinned by digest.*'eifbuild lock --trust-on-first-use'"):
        resolve_image(f"{registry.host}/test/multi:v1", arch="x86_64", store=store, project_dir=tmp_path)
    assert (
        main(
            [
                "oci",
                "inspect",
                f"{registry.host}/test/multi:v1",
                "--arch",
                "aarch64",
                "--json",
                "--cache",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["index"] == digest(images, "multi")
    assert info["platform"] == "linux/arm64"


def test_wrong_platform(tmp_path: Path, registry: Registry, images: dict[str, object]) -> None:
    store = Store(tmp_path / "store")
    ref = f"{registry.host}/test/arm@{digest(images, 'arm')}"
    with pytest.raises(ArchiveError) as exc:
        resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"{registry.host}/test/arm: manifest {digest(images, 'arm')}: the image is for linux/arm64, but arch x86_64 needs linux/amd64"
    )
    assert not list(store.keys())


def test_unknown_digest(tmp_path: Path, registry: Registry) -> None:
    missing = "sha256:" + "1" * 64
    with pytest.raises(FetchError) as exc:
        resolve_image(
            f"{registry.host}/test/single@{missing}",
            arch="x86_64",
            store=Store(tmp_path / "s"),
            project_dir=tmp_path,
        )
    assert str(exc.value) == (
        f"http://{registry.host}/v2/test/single/manifests/{missing}: not found (HTTP 404 (MANIFEST_UNKNOWN: manifest unknown))"
    )


def test_corrupt_and_missing_blobs_in_the_registry(tmp_path: Path, images: dict[str, object]) -> None:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    root = images["root"]
    assert isinstance(root, Path)
    (tmp_path / "reg").mkdir()
    reg = Registry(binary, tmp_path / "reg")
    reg.start()
    try:
        reg.push(skopeo, root / "single", "v1", "test/single")
        ref = f"{reg.host}/test/single@{digest(images, 'single')}"
        layers = images["single"].layer_digests  # type: ignore[attr-defined]
        blob = reg.blob_file(layers[0])
        good = blob.read_bytes()
        bad = bytearray(good)
        bad[20] ^= 1
        blob.write_bytes(bytes(bad))
        store = Store(tmp_path / "store")
        with pytest.raises(HashMismatch) as exc:
            resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert (
            str(exc.value)
            == f"layer {layers[0]} (layer 0 of the image): hash mismatch: expected {layers[0]}, got {sha(bytes(bad))}"
        )
        assert not list(store.keys())
        shutil.rmtree(blob.parent)
        with pytest.raises(FetchError, match=rf"/v2/test/single/blobs/{layers[0]}: not found \(HTTP 404"):
            resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert not list(store.keys())
    finally:
        reg.stop()


# -- token auth --------------------------------------------------------------------------------------
@pytest.fixture
def token_registry(tmp_path: Path, images: dict[str, object]) -> Iterator[tuple[Registry, TokenService]]:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    root = images["root"]
    assert isinstance(root, Path)
    (tmp_path / "reg").mkdir()
    tokens = TokenService(tmp_path / "reg", users={"alice": "s3cret"}, anonymous_pull=True)
    with tokens.running():
        reg = Registry(binary, tmp_path / "reg", tokens)
        reg.start()
        try:
            reg.push(skopeo, root / "single", "v1", "test/single", creds="alice:s3cret")
            tokens.requests.clear()
            yield reg, tokens
        finally:
            reg.stop()


def test_anonymous_token_flow(
    tmp_path: Path, token_registry: tuple[Registry, TokenService], images: dict[str, object]
) -> None:
    reg, tokens = token_registry
    image = resolve_image(
        f"{reg.host}/test/single@{digest(images, 'single')}",
        arch="x86_64",
        store=Store(tmp_path / "s"),
        project_dir=tmp_path,
    )
    assert image.manifest_digest == digest(images, "single")
    assert [(r.user, r.scope, r.service) for r in tokens.requests] == [
        (None, "repository:test/single:pull", "eifbuild-test-registry")
    ]


@pytest.mark.parametrize("how", ["env", "docker-config", "none"])
def test_credentials_for_the_token_flow(
    tmp_path: Path,
    token_registry: tuple[Registry, TokenService],
    images: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    reg, tokens = token_registry
    tokens.anonymous_pull = False
    if how == "env":
        monkeypatch.setenv("EIFBUILD_REGISTRY_USERNAME", "alice")
        monkeypatch.setenv("EIFBUILD_REGISTRY_PASSWORD", "s3cret")
    elif how == "docker-config":
        (tmp_path / "docker").mkdir()
        auth = base64.b64encode(b"alice:s3cret").decode()
        (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    ref = f"{reg.host}/test/single@{digest(images, 'single')}"
    store = Store(tmp_path / "s")
    if how == "none":
        with pytest.raises(FetchError) as exc:
            resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert str(exc.value).startswith(
            f"http://{reg.host}/v2/test/single/manifests/{digest(images, 'single')}: access denied (HTTP 401"
        )
        assert str(exc.value).endswith(
            "give credentials with EIFBUILD_REGISTRY_USERNAME/EIFBUILD_REGISTRY_PASSWORD or an auth file (EIFBUILD_REGISTRY_AUTH_FILE, DOCKER_CONFIG)"
        )
        assert [r.user for r in tokens.requests] == [None]
        return
    assert resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path).manifest_digest == digest(
        images, "single"
    )
    assert [r.user for r in tokens.requests] == ["alice"]


def test_wrong_password_is_refused_by_the_token_service(
    tmp_path: Path,
    token_registry: tuple[Registry, TokenService],
    images: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reg, tokens = token_registry
    monkeypatch.setenv("EIFBUILD_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("EIFBUILD_REGISTRY_PASSWORD", "wrong")
    with pytest.raises(FetchError) as exc:
        resolve_image(
            f"{reg.host}/test/single@{digest(images, 'single')}",
            arch="x86_64",
            store=Store(tmp_path / "s"),
            project_dir=tmp_path,
        )
    assert str(exc.value) == f"{tokens.realm}: token request for test/single refused: HTTP 401"


# -- basic auth --------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["env", "auth-file", "none"])
def test_basic_auth(
    tmp_path: Path, images: dict[str, object], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    root = images["root"]
    assert isinstance(root, Path)
    (tmp_path / "reg").mkdir()
    reg = Registry(binary, tmp_path / "reg", htpasswd=write_htpasswd(tmp_path / "htpasswd", {"bob": "pa55"}))
    reg.start()
    try:
        reg.push(skopeo, root / "single", "v1", "test/single", creds="bob:pa55")
        if how == "env":
            monkeypatch.setenv("EIFBUILD_REGISTRY_USERNAME", "bob")
            monkeypatch.setenv("EIFBUILD_REGISTRY_PASSWORD", "pa55")
        elif how == "auth-file":
            (tmp_path / "auth.json").write_text(
                json.dumps({"auths": {reg.host: {"username": "bob", "password": "pa55"}}})
            )
            monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
        ref = f"{reg.host}/test/single@{digest(images, 'single')}"
        store = Store(tmp_path / "store")
        if how == "none":
            with pytest.raises(
                FetchError,
                match=r"/manifests/sha256:[0-9a-f]{64}: access denied \(HTTP 401 \(UNAUTHORIZED: authentication required\)\); give credentials",
            ):
                resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
            assert not list(store.keys())
        else:
            assert resolve_image(
                ref, arch="x86_64", store=store, project_dir=tmp_path
            ).manifest_digest == digest(images, "single")
    finally:
        reg.stop()
