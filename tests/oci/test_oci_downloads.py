"""Registry layer blobs download once per store and resume after a kill (a real docker-registry
behind a counting, slowed-down proxy; real processes, killed with SIGKILL)."""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import require_tool
from oci_helpers import Built, Image, M, write_layout
from oci_registry import CountingProxy, Registry

from eifbuild.errors import HashMismatch
from eifbuild.oci import resolve_image
from eifbuild.store import Store

pytestmark = pytest.mark.slow

# incompressible, so each gzip layer blob is about 1 MiB: ~1.3 s through the slowed proxy
BIG = [random.Random(n).randbytes(1 << 20) for n in range(2)]  # noqa: S311 - test data, same in children
LAYERS = [[M(f"big{n}", data=BIG[n])] for n in range(2)]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture(scope="module")
def images(layouts: Path) -> dict[str, Built]:
    """The same two layers in both orders, so two imports want them in opposite orders."""
    return {
        "ab": write_layout(layouts / "ab", [Image(LAYERS)], tag="ab"),
        "ba": write_layout(layouts / "ba", [Image(LAYERS[::-1])], tag="ba"),
    }


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, layouts: Path, images: dict[str, Built]
) -> Iterator[Registry]:
    binary = require_tool("docker-registry")
    skopeo = require_tool("skopeo")
    reg = Registry(binary, tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        for tag in images:
            reg.push(skopeo, layouts / tag, tag, "test/big")
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def proxy(registry: Registry) -> Iterator[CountingProxy]:
    with CountingProxy(registry.host, trickle=0.02).running() as running:
        yield running


def _import_in_child(ref: str, store_root: str, times: str) -> None:
    start = time.monotonic()
    resolve_image(ref, arch="x86_64", store=Store(store_root), project_dir=Path(store_root))
    Path(times).write_text(f"{start} {time.monotonic()}")


def _spawn(ref: str, store: Store, times: Path) -> multiprocessing.process.BaseProcess:
    child = multiprocessing.get_context("spawn").Process(
        target=_import_in_child, args=(ref, str(store.root), str(times))
    )
    child.start()
    return child


def _blob_size(registry: Registry, digest: str) -> int:
    return registry.blob_file(digest).stat().st_size


def test_a_killed_import_resumes_its_partial_blob(
    tmp_path: Path, registry: Registry, proxy: CountingProxy, images: dict[str, Built]
) -> None:
    store = Store(tmp_path / "store")
    ref = f"{proxy.host}/test/big@{images['ab'].digest}"
    first = images["ab"].layer_digests[0]
    child = _spawn(ref, store, tmp_path / "times")
    part = store.downloads_dir / f"oci-blob-{first.replace(':', '-')}.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size >= 256 << 10) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.join(10)
    assert child.exitcode == -9
    assert list(store.keys()) == []
    kept = part.stat().st_size
    assert kept >= 256 << 10
    assert part in set(store.garbage())  # what 'store gc' would reclaim, if asked before a resume
    proxy.trickle = 0
    proxy.requests.clear()
    image = resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
    assert [layer.digest for layer in image.layers] == images["ab"].layer_digests
    (resumed,) = proxy.blob_gets(first)
    assert resumed.range == f"bytes={kept}-"
    assert resumed.sent == _blob_size(registry, first) - kept
    assert list(store.downloads_dir.iterdir()) == []  # the layers are in the store: nothing kept twice


def test_concurrent_imports_fetch_each_blob_once(
    tmp_path: Path, registry: Registry, proxy: CountingProxy, images: dict[str, Built]
) -> None:
    store = Store(tmp_path / "store")
    children = [
        _spawn(f"{proxy.host}/test/big@{images[tag].digest}", store, tmp_path / f"times-{tag}")
        for tag in ("ab", "ba")
    ]
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    spans = [tuple(map(float, (tmp_path / f"times-{tag}").read_text().split())) for tag in ("ab", "ba")]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), "the two imports did not overlap"
    for digest in images["ab"].layer_digests:
        (fetched,) = proxy.blob_gets(digest)
        assert (fetched.range, fetched.sent) == (None, _blob_size(registry, digest))
    assert list(store.downloads_dir.iterdir()) == []
    for tag in ("ab", "ba"):
        image = resolve_image(
            f"{proxy.host}/test/big@{images[tag].digest}", arch="x86_64", store=store, project_dir=tmp_path
        )
        assert [layer.digest for layer in image.layers] == images[tag].layer_digests


def _blob_url(proxy: CountingProxy, digest: str) -> str:
    return f"http://{proxy.host}/v2/test/big/blobs/{digest}"


def test_a_partial_blob_with_wrong_bytes_is_fetched_whole(
    tmp_path: Path, proxy: CountingProxy, images: dict[str, Built]
) -> None:
    store = Store(tmp_path / "store")
    digest = images["ab"].layer_digests[0]
    part = store.downloads_dir / f"oci-blob-{digest.replace(':', '-')}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 1000)  # not the blob's first bytes
    etag = requests.head(_blob_url(proxy, digest), timeout=10).headers["ETag"]
    part.with_name(part.name + ".json").write_text(
        json.dumps({"url": _blob_url(proxy, digest), "validator": etag})
    )
    proxy.trickle = 0
    resolve_image(
        f"{proxy.host}/test/big@{images['ab'].digest}", arch="x86_64", store=store, project_dir=tmp_path
    )
    assert [r.range for r in proxy.blob_gets(digest)] == ["bytes=1000-", None]
    assert list(store.downloads_dir.iterdir()) == []


def test_a_finished_blob_that_changed_on_disk_is_refused_and_dropped(
    tmp_path: Path, proxy: CountingProxy, images: dict[str, Built]
) -> None:
    store = Store(tmp_path / "store")
    digest = images["ab"].layer_digests[0]
    bad = store.downloads_dir / f"oci-blob-{digest.replace(':', '-')}"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the blob")
    ref = f"{proxy.host}/test/big@{images['ab'].digest}"
    proxy.trickle = 0
    with pytest.raises(HashMismatch, match=rf"^layer {digest} \(layer 0 of the image\): hash mismatch"):
        resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
    assert not bad.exists()
    assert proxy.blob_gets(digest) == []
    assert resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path).layers
    assert len(proxy.blob_gets(digest)) == 1
