"""Fetching sources over real HTTP (a local server that misbehaves on purpose), file:// and paths."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest
from source_helpers import FAST, Entry, LocalServer, make_tar, sha

from eifbuild import log
from eifbuild.cli import main
from eifbuild.errors import FetchError, FileAccessError, HashMismatch
from eifbuild.sources import Source, fetch_source, nar_digest_of_path
from eifbuild.sources.archive import nar_digest_of_archive
from eifbuild.sources.fetch import FetchedSource
from eifbuild.sources.nar import to_sri
from eifbuild.sources.recipe import Pins
from eifbuild.store import Downloader, SourceCache, Store

DATA = random.Random(4).randbytes(100_000)  # noqa: S311 - test data, the same in spawned children
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> SourceCache:
    return SourceCache(tmp_path / "sources")


def source(tmp_path: Path, **fields: object) -> Source:
    return Source(name="blob", recipe="test", recipe_path=tmp_path / "recipe.toml", **fields)  # type: ignore[arg-type]


def get(src: Source, store: Store, cache: SourceCache) -> FetchedSource:
    return fetch_source(src, store=store, cache=cache, downloader=Downloader(FAST))


def blobs(cache: SourceCache) -> list[Path]:
    return sorted((cache.root / "sha256").glob("??/*"))


# -- the happy path ----------------------------------------------------------------------------------
def test_fetch_publishes_into_store_and_cache(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/dl/blob.bin", DATA)
    got = get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert got.path.read_bytes() == DATA
    assert got.path.name == "blob.bin"
    assert (got.sha256, got.size, got.fetched_sha256, got.is_tree) == (SHA, len(DATA), SHA, False)
    assert got.path.parent == store.entry_dir(got.key)
    assert not got.path.stat().st_mode & 0o222
    assert store.get(got.key) is not None
    assert blobs(cache) == [cache.blob(SHA)]
    assert not list((cache.root / "partial").glob("*.part"))


def test_store_hit_needs_no_network(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    with LocalServer() as srv:
        url = srv.serve("/blob", DATA)
        first = get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    again = get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)  # server is gone
    assert again == first


def test_second_project_never_downloads_again(
    tmp_path: Path, server: LocalServer, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA)
    src = source(tmp_path, url=url, pins=Pins(sha256=SHA))
    one = get(src, Store(tmp_path / "project-a" / "cache"), cache)
    two = get(src, Store(tmp_path / "project-b" / "cache"), cache)
    assert len(server.hits("/blob")) == 1
    assert one.key == two.key
    assert two.path.read_bytes() == DATA


def test_redirect_is_followed(tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache) -> None:
    server.serve("/new", DATA)
    url = server.serve("/old", redirect="/new")
    assert get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache).sha256 == SHA
    assert [r.path for r in server.requests] == ["/old", "/new"]


def test_sha512_sri_pin(tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache) -> None:
    url = server.serve("/blob", DATA)
    pin = ("sha512", hashlib.sha512(DATA).hexdigest())
    got = get(source(tmp_path, url=url, pins=Pins(sri=pin)), store, cache)
    assert got.sha256 == SHA
    # The alias lets another project find it in the cache by its sha512 pin.
    get(source(tmp_path, url=url, pins=Pins(sri=pin)), Store(tmp_path / "other"), cache)
    assert len(server.hits("/blob")) == 1


# -- failures ------------------------------------------------------------------------------------------
def test_hash_mismatch_names_url_expected_and_actual(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA)
    wrong = "0" * 64
    with pytest.raises(HashMismatch) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=wrong)), store, cache)
    assert str(info.value) == f"{url}: hash mismatch: expected {wrong}, got {SHA}"
    assert blobs(cache) == []
    assert list(store.keys()) == []
    assert not list((cache.root / "partial").glob("*.part"))


def test_sri_mismatch_is_shown_as_sri(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA)
    wrong = ("sha384", "00" * 48)
    with pytest.raises(HashMismatch) as info:
        get(source(tmp_path, url=url, pins=Pins(sri=wrong)), store, cache)
    actual = to_sri(hashlib.sha384(DATA).digest(), "sha384")
    assert str(info.value) == f"{url}: hash mismatch: expected {to_sri(bytes(48), 'sha384')}, got {actual}"


def test_404_is_reported_with_the_url(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.url("/missing")
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == f"{url}: HTTP 404 Not Found"
    assert len(server.hits("/missing")) == 1  # 404 is not retried


def test_404_then_mirror(tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache) -> None:
    mirror = server.serve("/mirror/blob", DATA)
    src = source(tmp_path, url=server.url("/gone/blob"), mirrors=(mirror,), pins=Pins(sha256=SHA))
    assert get(src, store, cache).path.read_bytes() == DATA
    assert [r.path for r in server.requests] == ["/gone/blob", "/mirror/blob"]


def test_bad_bytes_from_first_mirror_then_good_ones(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    bad = server.serve("/bad", b"tampered")
    good = server.serve("/good", DATA)
    assert get(source(tmp_path, url=bad, mirrors=(good,), pins=Pins(sha256=SHA)), store, cache).sha256 == SHA


def test_every_mirror_failing_lists_each(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    a, b = server.url("/a"), server.serve("/b", b"wrong")
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=a, mirrors=(b,), pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == (
        f"every location of test/blob failed: {a}: HTTP 404 Not Found; "
        f"{b}: hash mismatch: expected {SHA}, got {sha(b'wrong')}"
    )


def test_500_is_retried_until_it_works(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, fail_first=2)
    assert get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache).sha256 == SHA
    assert len(server.hits("/blob")) == 3


def test_500_forever_gives_up(tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache) -> None:
    url = server.serve("/blob", DATA, fail_first=1000, fail_status=503)
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == f"{url}: HTTP 503 Service Unavailable"
    assert len(server.hits("/blob")) == FAST.retries + 1


def test_server_that_never_answers_times_out(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, header_delay=3)
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == f"{url}: timed out waiting for data"


def test_body_that_stalls_times_out(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, stall=3)
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == (
        f"{url}: timed out waiting for data; gave up at byte 0 after {FAST.resume_attempts + 1} retries"
    )
    assert blobs(cache) == []
    assert list(store.keys()) == []


def test_dropped_connection_is_resumed_with_range(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, drop_after=30_000)
    assert get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache).path.read_bytes() == DATA
    first, second = server.hits("/blob")
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=30000-"
    assert second.headers["If-Range"] == '"v1"'


def test_stalled_body_is_resumed(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, stall_at=60_000, stall=2)
    assert get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache).sha256 == SHA
    assert server.hits("/blob")[1].headers["Range"] == "bytes=60000-"


def test_server_without_ranges_restarts_from_zero(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, drop_after=30_000, ranges=False)
    assert get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache).path.read_bytes() == DATA
    assert len(server.hits("/blob")) == 2


def test_connection_that_keeps_dropping_gives_up(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, drop_after=0, drops=1000)
    with pytest.raises(FetchError, match=r"connection dropped mid-body; gave up at byte 0 after 3 retries"):
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)


def test_truncated_body_without_length_is_a_hash_mismatch(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA, content_length=False, drop_after=5000)
    with pytest.raises(HashMismatch) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == f"{url}: hash mismatch: expected {SHA}, got {sha(DATA[:5000])}"
    assert blobs(cache) == []
    assert list((cache.root / "partial").glob("*.part*")) == []  # wrong bytes are never resumed from


def test_a_partial_download_with_wrong_bytes_is_fetched_whole(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    url = server.serve("/blob", DATA)
    part = cache.partial(f"sha256-{SHA}")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 30_000)  # what a killed run left, but not the first bytes of DATA
    part.with_name(part.name + ".json").write_text(json.dumps({"url": url, "validator": '"v1"'}))
    stream = io.StringIO()
    with log.use(log.StderrReporter(stream, verbosity=1)):
        got = get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    assert got.path.read_bytes() == DATA
    resumed, whole = server.hits("/blob")
    assert (resumed.headers["Range"], "Range" in whole.headers) == ("bytes=30000-", False)
    assert f"{url}: the resumed download does not match; fetching it whole" in stream.getvalue()


@pytest.mark.parametrize("length", [True, False], ids=["with-length", "without-length"])
def test_a_body_larger_than_max_size_is_refused(tmp_path: Path, server: LocalServer, length: bool) -> None:
    url = server.serve("/blob", DATA, content_length=length)
    with pytest.raises(FetchError) as info:
        Downloader(FAST).download(url, tmp_path / "blob.part", max_size=len(DATA) - 1)
    assert str(info.value) == f"{url}: more than the {len(DATA) - 1} bytes expected"
    assert Downloader(FAST).download(url, tmp_path / "ok.part", max_size=len(DATA)).size == len(DATA)


def test_tls_is_verified(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    with LocalServer(tls_dir=tmp_path) as srv:
        url = srv.serve("/blob", DATA)
        with pytest.raises(FetchError, match=r"TLS verification failed .*CERTIFICATE_VERIFY_FAILED"):
            get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)


def test_connection_refused(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    with LocalServer() as srv:
        url = srv.url("/blob")  # nothing listens there once the server is closed
    with pytest.raises(FetchError) as info:
        get(source(tmp_path, url=url, pins=Pins(sha256=SHA)), store, cache)
    prefix = f"{url}: could not connect: Failed to establish a new connection: [Errno "
    assert str(info.value).startswith(prefix)
    assert str(info.value).endswith("] Connection refused")


def test_unsupported_scheme(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    with pytest.raises(FetchError, match=r"^ftp://x/y: unsupported URL scheme"):
        get(source(tmp_path, url="ftp://x/y", pins=Pins(sha256=SHA)), store, cache)


# -- local sources -------------------------------------------------------------------------------------
def test_file_url_and_path_sources(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    local = tmp_path / "dir with space" / "local.bin"
    local.parent.mkdir()
    local.write_bytes(DATA)
    by_url = get(source(tmp_path, url=local.as_uri(), pins=Pins(sha256=SHA)), store, cache)
    by_path = get(source(tmp_path, path="dir with space/local.bin", pins=Pins(sha256=SHA)), store, cache)
    assert by_url.path.read_bytes() == by_path.path.read_bytes() == DATA
    assert by_url.path.name == by_path.path.name == "local.bin"


def test_path_source_mismatch_names_the_file(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    (tmp_path / "f").write_bytes(b"local")
    with pytest.raises(HashMismatch) as info:
        get(source(tmp_path, path="f", pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value) == f"{tmp_path / 'f'}: hash mismatch: expected {SHA}, got {sha(b'local')}"


def test_missing_path_source(tmp_path: Path, store: Store, cache: SourceCache) -> None:
    with pytest.raises(FileAccessError) as info:
        get(source(tmp_path, path="nope", pins=Pins(sha256=SHA)), store, cache)
    assert str(info.value).startswith(f"{tmp_path / 'nope'}: no such file or directory (the path of source ")
    assert str(info.value).count("nope") == 1


def test_a_path_source_is_read_from_its_path_never_from_a_cache(
    tmp_path: Path, store: Store, cache: SourceCache
) -> None:
    (tmp_path / "kernel").write_bytes(DATA)
    src = source(tmp_path, path="kernel", pins=Pins(sha256=SHA))
    assert get(src, store, cache).sha256 == SHA
    assert blobs(cache) == []  # the project's file is not copied into the download cache
    edited = tmp_path / "other"
    edited.write_bytes(DATA)
    cache_copy = cache.publish(edited, SHA)  # even a cache that holds the bytes does not serve them
    assert cache_copy.exists()
    (tmp_path / "kernel").unlink()
    with pytest.raises(FileAccessError, match=r"/kernel: no such file or directory"):
        get(src, Store(tmp_path / "fresh"), cache)
    with pytest.raises(FileAccessError, match=r"/kernel: no such file or directory"):
        get(src, store, cache)  # nor does the store that has its entry
    (tmp_path / "kernel").write_bytes(b"changed")
    with pytest.raises(HashMismatch):
        get(src, store, cache)


def test_directory_path_source_is_pinned_by_nar_hash(
    tmp_path: Path, store: Store, cache: SourceCache
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"content")
    (tree / "link").symlink_to("sub/f")
    digest = nar_digest_of_path(tree)
    got = get(source(tmp_path, path="tree", pins=Pins(nar_sha256=digest.sha256)), store, cache)
    assert got.is_tree
    assert (got.sha256, got.size) == (digest.sha256, digest.size)
    assert (got.path / "sub" / "f").read_bytes() == b"content"
    (tree / "sub" / "f").write_bytes(b"changed")
    with pytest.raises(HashMismatch, match=r"\(NAR hash of the tree\): hash mismatch: expected sha256-"):
        get(source(tmp_path, path="tree", pins=Pins(nar_sha256=digest.sha256)), Store(tmp_path / "s2"), cache)


# -- archives ------------------------------------------------------------------------------------------
ARCHIVE = [
    Entry("proj-1.2.3/", dir=True),
    Entry("proj-1.2.3/blobs/x86_64/bzImage", b"kernel bytes"),
    Entry("proj-1.2.3/blobs/aarch64/Image", b"arm kernel bytes"),
    Entry("proj-1.2.3/README.md", b"readme"),
]


def test_member_of_a_nar_pinned_tarball(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    tarball = make_tar(tmp_path / "v1.2.3.tar.gz", ARCHIVE)
    nar = nar_digest_of_archive(tarball, strip=1)
    url = server.serve("/archive/v1.2.3.tar.gz", tarball.read_bytes())
    pins = Pins(nar_sha256=nar.sha256)
    x86 = get(source(tmp_path, url=url, strip=1, member="blobs/x86_64/bzImage", pins=pins), store, cache)
    arm = get(source(tmp_path, url=url, strip=1, member="blobs/aarch64/Image", pins=pins), store, cache)
    assert x86.path.read_bytes() == b"kernel bytes"
    assert x86.path.name == "bzImage"
    assert x86.sha256 == sha(b"kernel bytes")
    assert x86.fetched_sha256 == arm.fetched_sha256 == sha(tarball.read_bytes())
    assert arm.path.read_bytes() == b"arm kernel bytes"
    assert len(server.hits("/archive/v1.2.3.tar.gz")) == 1  # the second member came from the cache


def test_wrong_nar_hash_is_rejected_before_anything_is_kept(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache
) -> None:
    tarball = make_tar(tmp_path / "t.tar.gz", ARCHIVE)
    url = server.serve("/t.tar.gz", tarball.read_bytes())
    wrong = "ab" * 32
    with pytest.raises(HashMismatch) as info:
        get(source(tmp_path, url=url, strip=1, member="README.md", pins=Pins(nar_sha256=wrong)), store, cache)
    actual = nar_digest_of_archive(tarball, strip=1).sri
    assert str(info.value) == (
        f"{url} (NAR hash): hash mismatch: expected {to_sri(bytes.fromhex(wrong))}, got {actual}"
    )
    assert blobs(cache) == []
    assert list(store.keys()) == []


def test_unpacked_tree(tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache) -> None:
    tarball = make_tar(tmp_path / "t.tar.gz", ARCHIVE)
    url = server.serve("/t.tar.gz", tarball.read_bytes())
    got = get(
        source(tmp_path, url=url, strip=1, unpack=True, pins=Pins(sha256=sha(tarball.read_bytes()))),
        store,
        cache,
    )
    assert got.is_tree
    assert got.path == store.entry_dir(got.key)
    assert (got.path / "blobs" / "x86_64" / "bzImage").read_bytes() == b"kernel bytes"
    assert got.sha256 == nar_digest_of_archive(tarball, strip=1).sha256


def test_corrupt_cache_file_is_fetched_again(tmp_path: Path, server: LocalServer, cache: SourceCache) -> None:
    url = server.serve("/blob", DATA)
    src = source(tmp_path, url=url, pins=Pins(sha256=SHA))
    get(src, Store(tmp_path / "a"), cache)
    os.chmod(cache.blob(SHA), 0o644)
    cache.blob(SHA).write_bytes(b"bit rot")
    assert get(src, Store(tmp_path / "b"), cache).path.read_bytes() == DATA
    assert len(server.hits("/blob")) == 2


# -- concurrency and crashes -----------------------------------------------------------------------
def _fetch_in_child(url: str, cache_root: str, store_root: str) -> None:
    src = Source(
        name="blob", recipe="test", recipe_path=Path(store_root) / "r.toml", url=url, pins=Pins(sha256=SHA)
    )
    start = time.monotonic()
    fetch_source(src, store=Store(store_root), cache=SourceCache(cache_root), downloader=Downloader(FAST))
    (Path(store_root) / "times").write_text(f"{start} {time.monotonic()}")


def test_two_processes_fetch_once(tmp_path: Path, server: LocalServer) -> None:
    url = server.serve("/blob", DATA, trickle=0.04)  # ~1 s, so the two runs overlap
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_fetch_in_child, args=(url, str(tmp_path / "cache"), str(tmp_path / f"store{i}")))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(server.hits("/blob")) == 1
    for i in range(2):
        assert len(list(Store(tmp_path / f"store{i}").keys())) == 1
    spans = [tuple(map(float, (tmp_path / f"store{i}" / "times").read_text().split())) for i in range(2)]
    assert max(s[0] for s in spans) < min(s[1] for s in spans), "the two fetches did not overlap"


def test_sigkill_mid_download_leaves_no_entry_and_next_run_resumes(
    tmp_path: Path, server: LocalServer
) -> None:
    url = server.serve("/blob", DATA, trickle=0.05)  # 25 chunks of 4 KiB: ~1.2 s
    cache = SourceCache(tmp_path / "cache")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_fetch_in_child, args=(url, str(cache.root), str(tmp_path / "store")))
    child.start()
    part = cache.partial(f"sha256-{SHA}")
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size >= 8192) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.kill()
    child.join(10)
    assert child.exitcode == -9
    store = Store(tmp_path / "store")
    assert list(store.keys()) == []
    assert blobs(cache) == []
    assert len(list(store.garbage())) == 1  # the killed build's temp dir, removed by gc
    store.gc()
    assert not list(store.garbage())
    server.routes["/blob"].trickle = 0
    got = fetch_source(
        source(tmp_path, url=url, pins=Pins(sha256=SHA)),
        store=store,
        cache=cache,
        downloader=Downloader(FAST),
    )
    assert got.path.read_bytes() == DATA
    assert server.hits("/blob")[-1].headers["Range"].startswith("bytes=")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


PROGRESS = {
    "big-on-terminal": (5 << 20, True, True),
    "big-piped": (5 << 20, False, False),
    "small": (1000, True, False),
}


@pytest.mark.parametrize("case", sorted(PROGRESS))
def test_progress_bar_only_for_big_downloads_on_a_terminal(
    tmp_path: Path, server: LocalServer, store: Store, cache: SourceCache, case: str
) -> None:
    size, tty, bar = PROGRESS[case]
    data = bytes(size)
    url = server.serve("/big", data)
    stream = _Terminal() if tty else io.StringIO()
    with log.use(log.StderrReporter(stream)):
        get(source(tmp_path, url=url, pins=Pins(sha256=sha(data))), store, cache)
    assert ("big:" in stream.getvalue()) is bar
    assert "* fetch test/blob" in stream.getvalue()


def test_a_missing_path_source_is_named_once_and_normalised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = tmp_path / "app" / "recipes" / "r.toml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(
        f'[recipe]\nname = "r"\n[sources.k]\npath = "../kernel/bzImage"\nsha256 = "{"0" * 64}"\n'
    )
    assert main(["fetch", str(recipe), "--cache", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "app" / "kernel" / "bzImage"
    assert err.splitlines()[-1] == f"error: {missing}: no such file or directory (the path of source r/k)"
