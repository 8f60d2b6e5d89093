"""Pruning the remote cache (issue #24, part 3) on each S3 server of the ``s3`` fixture (moto, Ceph
RGW over HTTP and HTTPS): what is kept and deleted, dry runs, marking entries in use, the grace period,
objects it must not touch, unreadable manifests, paging, a push racing a prune, and the CLI.

S3's LastModified cannot be backdated, so most tests pass ``now`` (a time in the future) to
``prune``; the race test runs in real time with a grace period of seconds (and pushers that reuse
blobs only if younger than 2 s)."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from s3_helpers import Keys, S3Target

from eifbuild.errors import UsageError
from eifbuild.store import Step, Store
from eifbuild.store.local import StoreEntry
from eifbuild.store.remote import (
    CacheSettings,
    PruneReport,
    RemoteCache,
    prune,
    push_entry,
    verify_remote_entry,
)
from eifbuild.store.remote.cache import blob_name, manifest_name
from eifbuild.store.remote.pruning import blobs_named
from eifbuild.store.step import RawParams

DAY = datetime.timedelta(days=1)
SECOND = datetime.timedelta(seconds=1)
MARGIN = datetime.timedelta(seconds=0.5)  # HEAD's Last-Modified has whole seconds


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data(name: str, size: int = 3000) -> bytes:
    return (name.encode() + b"\n") * (size // (len(name) + 1))


def entry(store: Store, name: str, files: dict[str, bytes]) -> StoreEntry:
    """A store entry (its own step) holding ``files``."""
    step = Step(RawParams("compile", 1, {"name": name}), {"init.c": "ab" * 32}, {"zig": "0.17.1"})

    def build(_: RawParams, out: Path) -> dict[str, str]:
        for fname, content in files.items():
            (out / fname).write_bytes(content)
        return {}

    return store.realize(step, build)


class Bucket:
    """The test's view of the cache's objects (names below the cache's prefix)."""

    def __init__(self, s3: S3Target, settings: CacheSettings) -> None:
        assert settings.remote is not None
        self.s3, self.url = s3, settings.remote
        self.prefix = self.url.object_key("") + "/"

    def names(self) -> set[str]:
        keys = self.s3.keys(self.url.bucket)
        return {k.removeprefix(self.prefix) for k in keys if k.startswith(self.prefix)}

    def put(self, name: str, body: bytes) -> None:
        self.s3.client().put_object(Bucket=self.url.bucket, Key=self.url.object_key(name), Body=body)

    def modified(self, name: str) -> datetime.datetime:
        head = self.s3.client().head_object(Bucket=self.url.bucket, Key=self.url.object_key(name))
        stamp: datetime.datetime = head["LastModified"]
        return stamp


def intact(settings: CacheSettings, tmp_path: Path) -> None:
    """The invariant: every manifest in the bucket names only blobs that are there, and verifies."""
    cache = RemoteCache(settings)
    listed, _ = cache.bucket.listing("manifests/")
    for info in listed:
        key = info.name.removeprefix("manifests/").removesuffix(".json")
        scratch = tmp_path / f"verify-{uuid.uuid4().hex[:8]}"
        scratch.mkdir()
        assert verify_remote_entry(cache, key, scratch) is None, key


@pytest.fixture
def two_entries(tmp_path: Path, remote: CacheSettings, keys: Keys) -> tuple[StoreEntry, StoreEntry]:
    """OLD (files a = OLD, s = SHARED) pushed 2 s before NEW (b = NEW, s = SHARED)."""
    store = Store(tmp_path / "a")
    cache = RemoteCache(remote)
    old = entry(store, "old", {"a": data("OLD"), "s": data("SHARED")})
    push_entry(cache, store, old, keys.secret)
    time.sleep(2.1)
    new = entry(store, "new", {"b": data("NEW"), "s": data("SHARED")})
    push_entry(cache, store, new, keys.secret)
    return old, new


def test_prune_deletes_expired_manifests_then_their_unreferenced_blobs_and_keeps_the_rest(
    tmp_path: Path, s3: S3Target, remote: CacheSettings, two_entries: tuple[StoreEntry, StoreEntry]
) -> None:
    old, new = two_entries
    bucket = Bucket(s3, remote)
    before = bucket.names()
    assert len(before) == 5
    # two days on, keeping entries pushed since just before NEW: OLD has expired
    now = bucket.modified(manifest_name(new.key)) + 2 * DAY
    keep = 2 * DAY + MARGIN
    cache = RemoteCache(remote)
    cache.bucket.page_size = 2  # listings of several pages
    lines: list[str] = []
    dry = prune(cache, keep=keep, now=now, dry_run=True, echo=lines.append)
    assert bucket.names() == before  # a dry run deletes nothing …
    expected_manifests = [manifest_name(old.key)]
    expected_blobs = [blob_name(_sha(data("OLD")))]
    assert [r.name for r in dry.manifests_deleted] == expected_manifests  # … but says the same
    assert [r.name for r in dry.blobs_deleted] == expected_blobs
    assert all(line.startswith("would delete") for line in lines)
    assert len(lines) == 2

    lines.clear()
    report = prune(cache, keep=keep, now=now, echo=lines.append)
    assert [r.name for r in report.manifests_deleted] == expected_manifests
    assert [r.name for r in report.blobs_deleted] == expected_blobs
    assert [line.split()[:3] for line in lines] == [
        ["deleted", "manifest", expected_manifests[0]],
        ["deleted", "blob", expected_blobs[0]],
    ]
    assert bucket.names() == before - {*expected_manifests, *expected_blobs}
    assert report.bytes_freed == dry.bytes_freed == len(data("OLD")) + dry.manifests_deleted[0].size
    assert (report.manifests_kept, report.blobs_kept) == (dry.manifests_kept, dry.blobs_kept) == (1, 2)
    assert "deleted 1 manifests and 2 blobs" not in report.summary()
    assert report.summary().startswith(f"pruned {remote.remote}: deleted 1 manifests and 1 blobs")
    intact(remote, tmp_path)  # NEW and its shared blob are whole
    # today, keeping a day: nothing has expired
    assert prune(cache, keep=DAY).manifests_deleted == []
    assert bucket.names() == before - {*expected_manifests, *expected_blobs}


def test_a_build_that_finds_an_old_entry_marks_it_in_use(
    tmp_path: Path,
    s3: S3Target,
    remote: CacheSettings,
    keys: Keys,
    two_entries: tuple[StoreEntry, StoreEntry],
) -> None:
    old, new = two_entries
    bucket = Bucket(s3, remote)
    store = Store(tmp_path / "a")
    stamp = bucket.modified(manifest_name(old.key))
    fresh = RemoteCache(remote)  # the mark is a day old at most: not refreshed
    assert not push_entry(fresh, store, old, keys.secret).new
    assert bucket.modified(manifest_name(old.key)) == stamp
    time.sleep(2.5)
    marking = RemoteCache(remote)
    marking.mark_age = SECOND  # OLD is older than this: the push marks it (a self-copy)
    assert not push_entry(marking, store, old, keys.secret).new
    marked = bucket.modified(manifest_name(old.key))
    assert marked > bucket.modified(manifest_name(new.key))
    assert bucket.names() == {manifest_name(old.key), manifest_name(new.key)} | {
        blob_name(_sha(data(n))) for n in ("OLD", "NEW", "SHARED")
    }
    # two days on, keeping what was pushed or marked since just before the mark: NEW goes
    report = prune(RemoteCache(remote), keep=2 * DAY + MARGIN, now=marked + 2 * DAY)
    assert [r.name for r in report.manifests_deleted] == [manifest_name(new.key)]
    assert [r.name for r in report.blobs_deleted] == [blob_name(_sha(data("NEW")))]
    intact(remote, tmp_path)


def test_marking_an_entry_a_prune_deleted_meanwhile_pushes_it_again(
    tmp_path: Path,
    s3: S3Target,
    remote: CacheSettings,
    keys: Keys,
    two_entries: tuple[StoreEntry, StoreEntry],
) -> None:
    old, _ = two_entries
    cache = RemoteCache(remote)
    assert not cache.bucket.touch("manifests/nothing.json", content_type="application/json")
    Bucket(s3, remote).s3.client().delete_object(
        Bucket=remote.remote.bucket,  # type: ignore[union-attr]
        Key=remote.remote.object_key(manifest_name(old.key)),  # type: ignore[union-attr]
    )
    cache.mark_age = SECOND
    assert push_entry(cache, Store(tmp_path / "a"), old, keys.secret).new
    intact(remote, tmp_path)


def test_blobs_younger_than_the_grace_period_are_kept_unreferenced_and_other_objects_untouched(
    s3: S3Target, remote: CacheSettings
) -> None:
    """A blob uploaded before its manifest is in no manifest yet: only its age protects it."""
    bucket = Bucket(s3, remote)
    orphan = blob_name(_sha(b"uploaded, manifest not yet"))
    bucket.put(orphan, b"uploaded, manifest not yet")
    others = {
        "blobs/sha256/not-a-hash",
        "blobs/other/" + "0" * 64,
        "manifests/notes.txt",
        "manifests/deep/x.json",
        "README",
    }
    for name in others:
        bucket.put(name, b"not the cache's")
    assert remote.remote is not None
    bucket.s3.client().put_object(Bucket=remote.remote.bucket, Key="elsewhere/" + orphan, Body=b"x")
    cache = RemoteCache(remote)
    report = prune(cache, keep=datetime.timedelta(0))
    assert report.blobs_deleted == []
    assert bucket.names() == {orphan, *others}
    report = prune(
        cache, keep=datetime.timedelta(0), now=datetime.datetime.now(datetime.timezone.utc) + 2 * DAY
    )
    assert [r.name for r in report.blobs_deleted] == [orphan]
    assert bucket.names() == others
    assert "elsewhere/" + orphan in s3.keys(remote.remote.bucket)


def test_an_unreadable_manifest_is_kept_reported_and_stops_blob_deletion(
    s3: S3Target, remote: CacheSettings, two_entries: tuple[StoreEntry, StoreEntry]
) -> None:
    old, new = two_entries
    bucket = Bucket(s3, remote)
    bucket.put("manifests/garbage.json", b'{"manifest": {"format": 1, "outputs": [')
    bucket.put("manifests/future.json", b'{"manifest": {"format": 2}}')
    now = datetime.datetime.now(datetime.timezone.utc) + 2 * DAY
    lines: list[str] = []
    report = prune(RemoteCache(remote), keep=DAY, now=now, echo=lines.append)
    assert sorted(report.unreadable) == ["manifests/future.json", "manifests/garbage.json"]
    assert sorted(r.name for r in report.manifests_deleted) == sorted(
        manifest_name(e.key) for e in (old, new)
    )
    assert report.blobs_deleted == []
    assert len([line for line in lines if line.startswith("kept manifests/")]) == 2
    assert "2 manifests unreadable, so no blob was deleted" in report.summary()
    assert bucket.names() == {"manifests/garbage.json", "manifests/future.json"} | {
        blob_name(_sha(data(n))) for n in ("OLD", "NEW", "SHARED")
    }


def test_blobs_named_reads_any_manifest_boundedly() -> None:
    sha = "ab" * 32
    doc = b'{"manifest": {"format": 1, "outputs": {"f": {"type": "file", "sha256": "%s", "size": 1},'
    doc += b' "l": {"type": "symlink", "target": "f"}}}, "signatures": []}'
    assert blobs_named(doc % sha.encode()) == {sha}
    for bad in (
        b"[" * 100_000,  # deeper than the bounded decoder allows
        b'{"manifest": {"format": 1, "outputs": {"f": {"type": "file", "sha256": "../x"}}}}',
        b'{"manifest": {"format": 1, "outputs": {"f": {"type": "dir"}}}}',
        b'{"manifest": {"format": 1, "outputs": 7}}',
        b"NaN",
    ):
        with pytest.raises(ValueError, match=r"\S"):
            blobs_named(bad)


def test_prune_refuses_a_negative_keep_or_a_grace_shorter_than_blob_reuse(remote: CacheSettings) -> None:
    cache = RemoteCache(remote)
    with pytest.raises(UsageError, match="negative"):
        prune(cache, keep=-SECOND)
    with pytest.raises(UsageError, match="longer than 12 hours"):
        prune(cache, keep=DAY, grace=datetime.timedelta(hours=12))


def test_more_than_a_thousand_blobs_are_listed_page_by_page(
    moto_remote: CacheSettings, keys: Keys, moto: object
) -> None:
    cache = RemoteCache(moto_remote)
    names = [blob_name(_sha(b"%d" % i)) for i in range(1005)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: cache.bucket.put(n, b"x", content_type="application/octet-stream"), names))
    report = prune(cache, keep=DAY, now=datetime.datetime.now(datetime.timezone.utc) + 2 * DAY)
    assert sorted(r.name for r in report.blobs_deleted) == sorted(names)
    assert cache.bucket.listing("blobs/")[0] == []


# -- a push racing a prune -------------------------------------------------------------------------
REUSE = datetime.timedelta(seconds=2)  # pushers reuse blobs younger than this …
GRACE = datetime.timedelta(seconds=5)  # … so a push must take less than 3 s
KEEP = datetime.timedelta(seconds=3)


def test_pushes_racing_a_prune_leave_every_manifest_whole(
    tmp_path: Path, s3: S3Target, remote: CacheSettings, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds: pushers push new entries that share blobs with the last round's (expired by now),
    while a prune deletes those and the blobs they alone named. The pushers start one after another
    and are slow to write their manifests, the prune slow to check blobs, so pushes check blobs
    before, during and after the prune's listings and deletes. After each round every manifest in
    the bucket has all its blobs and this round's entries pull back intact."""
    store = Store(tmp_path / "a")
    pushers = 5

    def files(round_: int, i: int) -> dict[str, bytes]:
        return {
            "shared": data(f"shared {round_ // 2} {i}"),  # the same in rounds 0-1 and 2-3
            "mine": data(f"mine {round_} {i}"),
            "common": data("common to all"),
        }

    def cache(*, delay: float = 0.0, slow: str = "put") -> RemoteCache:
        c = RemoteCache(remote)
        c.blob_reuse_age = REUSE
        real = getattr(c.bucket, slow)

        def slowly(name: str, *args: object, **kwargs: object) -> object:
            if slow == "stat" or name.startswith("manifests/"):
                time.sleep(delay)
            return real(name, *args, **kwargs)

        monkeypatch.setattr(c.bucket, slow, slowly)
        return c

    for i in range(pushers):
        push_entry(cache(), store, entry(store, f"r0-{i}", files(0, i)), keys.secret)
    deleted = refreshed = 0
    for round_ in range(1, 4):
        time.sleep(GRACE.total_seconds() + 0.5)  # the last round's entries and blobs have expired
        entries = [entry(store, f"r{round_}-{i}", files(round_, i)) for i in range(pushers)]
        start = threading.Barrier(pushers + 1)
        reports: list[PruneReport] = []

        def push(i: int, e: StoreEntry, barrier: threading.Barrier = start) -> None:
            barrier.wait()
            time.sleep(0.12 * i)
            assert push_entry(cache(delay=0.4), store, e, keys.secret).new

        def run_prune(barrier: threading.Barrier = start, reports: list[PruneReport] = reports) -> None:
            c = cache(delay=0.03, slow="stat")
            c.bucket.page_size = 3
            barrier.wait()
            reports.append(prune(c, keep=KEEP, grace=GRACE))

        threads = [threading.Thread(target=push, args=(i, e)) for i, e in enumerate(entries)]
        threads.append(threading.Thread(target=run_prune))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(reports) == 1
        deleted += len(reports[0].manifests_deleted)
        refreshed += len(reports[0].refreshed)
        intact(remote, tmp_path)
        listed = {i.name for i in cache().bucket.listing("manifests/")[0]}
        assert {manifest_name(e.key) for e in entries} <= listed
    assert deleted >= 2 * pushers  # the prunes did delete the earlier rounds' entries …
    assert refreshed > 0  # … and found blobs that pushers had refreshed meanwhile


# -- the command line ------------------------------------------------------------------------------
EIF_TOML = """\
[eif]
name = "hello"
version = "0.1.0"
arch = ["x86_64"]
recipes = ["recipes/test.toml"]

[bootstrap]
init = { path = "init.bin" }

[app]
rootfs = "rootfs"
cmd = ["/bin/app"]

"""


def _eifbuild(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eifbuild", "cache", "prune", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_cache_prune_on_the_command_line(
    tmp_path: Path, s3: S3Target, remote: CacheSettings, keys: Keys
) -> None:
    assert remote.remote is not None
    store = Store(tmp_path / "a")
    one = entry(store, "one", {"f": data("ONE")})
    push_entry(RemoteCache(remote), store, one, keys.secret)
    project = tmp_path / "project"
    project.mkdir()
    table = f'[cache]\nremote = "{remote.remote}"\nendpoint_url = "{s3.endpoint}"\nregion = "us-east-1"\n' + (
        f'ca_bundle = "{s3.ca_bundle}"\n' if s3.ca_bundle else ""
    )
    (project / "eif.toml").write_text(EIF_TOML + table)
    for bad, why in (
        (["--keep-days", "-1"], "--keep-days"),
        (["--keep-days", "nan"], "--keep-days"),
        (["--keep-days", "1", "--grace-hours", "12"], "longer than 12 hours"),
    ):
        result = _eifbuild(project, *bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error:")
        assert why in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    time.sleep(1.1)
    bucket = Bucket(s3, remote)
    before = bucket.names()
    dry = _eifbuild(project, "--keep-days", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete manifest {manifest_name(one.key)}" in dry.stdout
    assert "would delete 1 manifests and 0 blobs" in dry.stdout
    assert bucket.names() == before
    real = _eifbuild(project, "--keep-days", "0.0", "--grace-hours", "30")
    assert real.returncode == 0, real.stderr
    assert f"deleted manifest {manifest_name(one.key)}" in real.stdout
    assert bucket.names() == {blob_name(_sha(data("ONE")))}  # the blob is an hour old, not 30
