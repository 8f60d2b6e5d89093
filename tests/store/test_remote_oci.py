"""An OCI app image through the remote cache, end to end (real doit subprocesses, each S3 server of
the ``s3`` fixture, Debian's docker-registry): A pulls the image from the registry and pushes its blobs; B, with a
fresh store, takes index, manifest, config and layers from the remote, verified by their digests,
and never contacts the registry; a layer changed in the bucket is refused and fetched from the
registry instead (or, with ``EIFBUILD_REQUIRE_REMOTE=1``, fails the build)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool
from dag_helpers import Project
from oci_helpers import Built, sample_image, write_layout
from oci_registry import CountingProxy, Registry
from s3_helpers import S3Target
from source_helpers import LocalServer
from test_remote_dag import checkout, env  # noqa: F401 - fixtures shared with the doit tests

from eifbuild.store import Store

pytestmark = pytest.mark.slow  # a docker-registry and doit subprocesses

APP_LINES = re.compile(r'rootfs = "rootfs"\n\s*cmd = \[.*\]\n')  # the app of test_dag's eif.toml


@pytest.fixture
def image(tmp_path: Path) -> Iterator[tuple[Registry, Built]]:
    """A two-platform image (gzip and zstd layers) pushed to a docker-registry of its own."""
    layout = tmp_path / "layout"
    built = write_layout(layout, [sample_image("amd64"), sample_image("arm64", "zstd")], tag="v1")
    (tmp_path / "registry").mkdir()
    registry = Registry(require_tool("docker-registry"), tmp_path / "registry")
    registry.start()
    try:
        registry.push(require_tool("skopeo"), layout, "v1", "test/app", all_images=True)
        yield registry, built
    finally:
        registry.stop()


def oci_checkout(tmp_path: Path, server: LocalServer, name: str, table: str, ref: str) -> Project:
    project = checkout(tmp_path, server, name, table)
    toml = project.root / "eif.toml"
    text, replaced = APP_LINES.subn(f'oci = "{ref}"\n', toml.read_text())
    assert replaced == 1
    toml.write_text(text)
    return project


def image_records(project: Project) -> dict[str, Mapping[str, Any]]:
    """The store records of the image's entries (oci-blob, oci-layer) by key."""
    store = Store(project.root / "cache")
    return {e.key: e.record for e in store.entries() if e.kind.startswith("oci-")}


def kind(record: Mapping[str, Any]) -> str:
    return str(record["step"]["kind"])


def remote_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: remote cache")]


def push_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    return {"EIFBUILD_REMOTE_CACHE_PUSH": "1", "EIFBUILD_CACHE_SIGNING_KEY": env["key_file"]}


def test_b_takes_the_image_from_the_remote_with_no_registry_running(
    tmp_path: Path,
    server: LocalServer,
    env: dict[str, str],  # noqa: F811
    image: tuple[Registry, Built],
) -> None:
    registry, built = image
    ref = f"{registry.host}/test/app@{built.digest}"
    a = oci_checkout(tmp_path, server, "a", env["table"], ref)
    built_a = a.doit(env=push_env(env))
    assert "fetch:oci:x86_64" in built_a.ran
    kinds = sorted(kind(r) for r in image_records(a).values())
    assert kinds == ["oci-blob"] * 3 + ["oci-layer"] * 3  # index, manifest, config; three layers
    registry.stop()  # B must not need it: a contact would fail the build

    b = oci_checkout(tmp_path, server, "b", env["table"], ref)
    pulled = b.doit(env={"EIFBUILD_REQUIRE_REMOTE": "1"})  # a blob the remote lacks is an error
    assert "fetch:oci:x86_64" in pulled.ran
    assert "importing image blobs" not in pulled.result.stderr
    assert pulled.result.stderr.count("* pulled oci-layer") == 3
    records = image_records(b)
    assert records.keys() == image_records(a).keys()
    assert all(r.get("substituted") for r in records.values()), records
    assert b.eif().read_bytes() == a.eif().read_bytes()
    assert b.pcrs() == a.pcrs()

    # trusting nobody, C still takes the sources and the image's blobs (their digests are the
    # trust) and builds only the ramdisks and the EIF itself
    untrusted = re.sub(r"trusted_keys = \[.*\]", "trusted_keys = []", env["table"])
    c = oci_checkout(tmp_path, server, "c", untrusted, ref)
    unsigned = c.doit()
    assert unsigned.result.stderr.count("trusted by content-addressed") == 3 + 3 + 2, unsigned.result.stderr
    assert all(r.get("substituted") for r in image_records(c).values())
    assert c.eif().read_bytes() == a.eif().read_bytes()


def test_a_layer_changed_in_the_bucket_is_refused_and_fetched_from_the_registry(
    tmp_path: Path,
    server: LocalServer,
    s3: S3Target,
    env: dict[str, str],  # noqa: F811
    image: tuple[Registry, Built],
) -> None:
    registry, built = image
    with CountingProxy(registry.host).running() as proxy:
        ref = f"{proxy.host}/test/app@{built.digest}"
        a = oci_checkout(tmp_path, server, "a", env["table"], ref)
        a.doit(env=push_env(env))
        victim = next(r for r in image_records(a).values() if kind(r) == "oci-layer")
        sha256 = str(victim["outputs"]["layer.tar"]["sha256"])
        _tamper(s3, env["table"], sha256)
        before = len(proxy.requests)

        b = oci_checkout(tmp_path, server, "b", env["table"], ref)
        fell_back = b.doit()
        warnings = remote_warnings(fell_back.result.stderr)
        assert len(warnings) == 1, fell_back.result.stderr
        assert "refused oci-layer entry" in warnings[0]
        assert f"expected {victim['size']} bytes {sha256}" in warnings[0]
        layer_digest = str(victim["step"]["params"]["digest"])
        fetched = proxy.requests[before:]
        assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in fetched] == [("GET", layer_digest)]
        records = image_records(b)
        assert not records[str(victim["key"])].get("substituted")  # fetched from the registry
        assert b.eif().read_bytes() == a.eif().read_bytes()

        strict = oci_checkout(tmp_path, server, "strict", env["table"], ref)
        failed = strict.doit(env={"EIFBUILD_REQUIRE_REMOTE": "1"}, check=False)
        assert failed.result.returncode != 0
        assert "refused oci-layer entry" in failed.result.stdout + failed.result.stderr, failed.result.stdout
        assert len(proxy.requests) == before + 1  # the strict build went to no registry either
        assert all(r.get("substituted") for r in image_records(strict).values())


def _tamper(s3: S3Target, table: str, sha256: str) -> None:
    """Change one byte of the blob ``sha256`` in the bucket."""
    match = re.search(r's3://([^/"]+)/([^"]*)"', table)
    assert match is not None
    bucket, key = match[1], f"{match[2]}/blobs/sha256/{sha256}"
    client = s3.client()
    data = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0xFF
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
