"""Parallel, ranged and multipart transfers of the remote cache (issue #24, part 2), on moto and on
Ceph RGW over HTTP and HTTPS: an entry with several files and one blob above the threshold (40 MiB
and 3 bytes: six 8 MiB parts, the last one short) is pushed as a multipart upload and pulled in
ranges, byte-identical; a wrong or short blob is refused and nothing is committed; a connection cut
in the middle of a ranged download or of a multipart upload is one warning and a local build; the
number of requests in flight is bounded (counted by instrumenting the client, not by timing)."""

from __future__ import annotations

import functools
import hashlib
import random
import threading
from pathlib import Path
from typing import Any

from s3_helpers import CuttingProxy, Keys, MotoServer, S3Target
from test_remote import Recorder

from eifbuild import log
from eifbuild.store import Step, Store
from eifbuild.store.remote import CacheSettings, RemoteCache, attach, push_entry
from eifbuild.store.remote._transfer import CONCURRENCY, PART_SIZE, THRESHOLD
from eifbuild.store.remote.cache import blob_name, manifest_name
from eifbuild.store.remote.substitute import pull_entry
from eifbuild.store.step import RawParams

BIG_SIZE = 40 * 1024 * 1024 + 3
BIG_PARTS = -(-BIG_SIZE // PART_SIZE)
SMALL = {"a/one.txt": b"one\n" * 1000, "a/two.txt": b"two\n", "tool": b"#!/bin/sh\necho hi\n", "empty": b""}
STEP = Step(RawParams("bigentry", 1, {"n": 1}), {"src": "cd" * 32}, {})


@functools.cache
def big_bytes() -> bytes:
    return random.Random(24).randbytes(BIG_SIZE)  # noqa: S311 - test data, not a secret


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_into(calls: list[Path]) -> Any:
    def build(_: RawParams, out: Path) -> dict[str, str]:
        calls.append(out)
        (out / "a").mkdir()
        for name, data in SMALL.items():
            (out / name).write_bytes(data)
        (out / "tool").chmod(0o755)
        (out / "same-as-one.txt").write_bytes(SMALL["a/one.txt"])  # one blob for two files
        (out / "big.bin").write_bytes(big_bytes())
        (out / "link").symlink_to("a/one.txt")
        return {"note": "built"}

    return build


DISTINCT_BLOBS = len(SMALL) + 1  # the copy shares a blob
ENTRY_SIZE = sum(map(len, SMALL.values())) + len(SMALL["a/one.txt"]) + BIG_SIZE
UPLOADED = sum(map(len, SMALL.values())) + BIG_SIZE


class Counting:
    """Wraps a bucket's boto3 client: counts calls per operation (and ranged GETs), and the most
    blob requests (GET, PUT, UploadPart) in flight at once. With ``gate``, each blob request waits
    (at most 5 s) until ``gate`` of them are in flight: then the maximum seen is exactly the bound
    when the pool has at least that many requests to make, whatever the timing."""

    DATA = frozenset({"get_object", "put_object", "upload_part"})

    def __init__(self, cache: RemoteCache, gate: int = 0) -> None:
        self._client = cache.bucket.client
        cache.bucket._client = self
        self.calls: dict[str, int] = {}
        self.ranged = 0
        self.in_flight = 0
        self.most = 0
        self.gate = gate
        self._open = gate == 0
        self._cond = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._cond:
                self.calls[name] = self.calls.get(name, 0) + 1
                self.ranged += int("Range" in kwargs)
            if name in self.DATA and "/blobs/" in str(kwargs.get("Key")):
                return self._data(real, args, kwargs)
            return real(*args, **kwargs)

        return call

    def _data(self, real: Any, args: Any, kwargs: Any) -> Any:
        with self._cond:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            if self.in_flight >= self.gate:
                self._open = True
                self._cond.notify_all()
            self._cond.wait_for(lambda: self._open, timeout=5)
        try:
            return real(*args, **kwargs)
        finally:
            with self._cond:
                self.in_flight -= 1


def _push(tmp_path: Path, settings: CacheSettings, keys: Keys, gate: int = 0) -> tuple[Store, Counting]:
    store = Store(tmp_path / "a")
    entry = store.realize(STEP, build_into([]))
    cache = RemoteCache(settings)
    counting = Counting(cache, gate)
    pushed = push_entry(cache, store, entry, keys.secret)
    assert pushed.new
    assert pushed.uploaded_bytes == UPLOADED
    assert (cache.transfers.pushed, cache.transfers.pushed_bytes) == (1, UPLOADED)
    return store, counting


def _pull(
    tmp_path: Path, settings: CacheSettings, gate: int = 0
) -> tuple[Store, list[Path], Recorder, RemoteCache, Counting]:
    store = Store(tmp_path / "b")
    cache = RemoteCache(settings)
    counting = Counting(cache, gate)
    store.substituter = functools.partial(pull_entry, cache)
    calls: list[Path] = []
    recorder = Recorder()
    with log.use(recorder):
        store.realize(STEP, build_into(calls))
    return store, calls, recorder, cache, counting


def test_big_blob_goes_up_in_parts_and_comes_down_in_ranges_byte_identical(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    assert BIG_SIZE > THRESHOLD
    a, pushing = _push(tmp_path, remote, keys)
    assert pushing.calls["upload_part"] == BIG_PARTS
    assert pushing.calls["put_object"] == DISTINCT_BLOBS - 1 + 1  # the small blobs, then the manifest
    assert remote.remote is not None
    client, bucket = s3.client(), remote.remote.bucket
    big_key = remote.remote.object_key(blob_name(_sha(big_bytes())))
    head = client.head_object(Bucket=bucket, Key=big_key)
    assert head["ContentLength"] == BIG_SIZE
    assert head["ETag"].strip('"').endswith(f"-{BIG_PARTS}")  # a multipart object
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")

    b, calls, recorder, cache, pulling = _pull(tmp_path, remote)
    assert calls == []
    assert recorder.warnings == []
    assert pulling.ranged == BIG_PARTS
    assert pulling.calls["get_object"] == 1 + BIG_PARTS + len(SMALL) + 1  # manifest, ranges, small files
    assert (cache.transfers.pulled, cache.transfers.pulled_bytes) == (1, ENTRY_SIZE)
    theirs, ours = a.get(STEP.key), b.get(STEP.key)
    assert theirs is not None
    assert ours is not None
    assert ours.record["substituted"] == str(remote.remote)
    assert ours.outputs == theirs.outputs
    assert ours.file("big.bin").read_bytes() == big_bytes()
    for name, data in SMALL.items():
        assert ours.file(name).read_bytes() == data
    assert (ours.path / "link").readlink() == Path("a/one.txt")
    assert b.check(ours) == []  # what the pull recorded is what the files hold
    assert not list((b.root / "tmp").iterdir())


def test_requests_in_flight_are_bounded_for_push_and_pull(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys
) -> None:
    assert BIG_PARTS + DISTINCT_BLOBS - 1 > CONCURRENCY  # more requests than the bound, both ways
    _, pushing = _push(tmp_path, moto_remote, keys, gate=CONCURRENCY)
    assert pushing.most == CONCURRENCY
    _, calls, _, _, pulling = _pull(tmp_path, moto_remote, gate=CONCURRENCY)
    assert calls == []
    assert pulling.most == CONCURRENCY


def _tamper_big(s3: S3Target, settings: CacheSettings, data: bytes) -> None:
    assert settings.remote is not None
    key = settings.remote.object_key(blob_name(_sha(big_bytes())))
    s3.client().put_object(Bucket=settings.remote.bucket, Key=key, Body=data)


def _built_here(store: Store, recorder: Recorder, calls: list[Path], settings: CacheSettings) -> str:
    assert len(calls) == 1, "the refused entry must be built locally"
    assert len(recorder.warnings) == 1, recorder.lines
    warning = recorder.warnings[0]
    assert str(settings.remote) in warning
    assert "building locally" in warning
    entry = store.get(STEP.key)
    assert entry is not None
    assert "substituted" not in entry.record
    assert entry.file("big.bin").read_bytes() == big_bytes()
    assert not list((store.root / "tmp").iterdir())
    return warning


def test_a_short_big_blob_is_refused_from_its_headers(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    _push(tmp_path, remote, keys)
    _tamper_big(s3, remote, big_bytes()[:-5])
    store, calls, recorder, cache, _ = _pull(tmp_path, remote)
    warning = _built_here(store, recorder, calls, remote)
    assert f"blob of 'big.bin' is {BIG_SIZE - 5} bytes, expected {BIG_SIZE} bytes" in warning
    assert cache.transfers.pulled == 0
    assert cache.transfers.refused == [STEP.key]


def test_a_changed_byte_in_a_big_blob_is_refused_naming_the_file(
    tmp_path: Path, remote: CacheSettings, keys: Keys, s3: S3Target
) -> None:
    _push(tmp_path, remote, keys)
    changed = bytearray(big_bytes())
    changed[PART_SIZE * 3 + 7] ^= 1  # in the middle of a middle range
    _tamper_big(s3, remote, bytes(changed))
    store, calls, recorder, cache, _ = _pull(tmp_path, remote)
    warning = _built_here(store, recorder, calls, remote)
    assert f"blob of 'big.bin' is {BIG_SIZE} bytes with sha256 {_sha(bytes(changed))}" in warning
    assert cache.transfers.pulled == 0


def _via(proxy: CuttingProxy, settings: CacheSettings) -> CacheSettings:
    return CacheSettings(
        remote=settings.remote,
        endpoint_url=proxy.endpoint,
        trusted_keys=settings.trusted_keys,
        signing_key_file=settings.signing_key_file,
    )


def test_a_cut_in_the_middle_of_a_ranged_download_is_one_warning_and_a_local_build(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    _push(tmp_path, moto_remote, keys)

    def third_range(command: str, path: str, headers: Any) -> bool:
        return command == "GET" and headers.get("Range", "").startswith(f"bytes={2 * PART_SIZE}-")

    with CuttingProxy(moto.port, cut=third_range) as proxy:
        store, calls, recorder, cache, _ = _pull(tmp_path, _via(proxy, moto_remote))
    assert proxy.cuts >= 1
    warning = _built_here(store, recorder, calls, moto_remote)
    assert blob_name(_sha(big_bytes())) in warning  # names the object whose transfer broke
    assert cache.transfers.pulled == 0
    assert cache.down is not None


def test_a_cut_in_the_middle_of_a_multipart_upload_is_one_warning_and_no_manifest(
    tmp_path: Path, moto_remote: CacheSettings, keys: Keys, moto: MotoServer
) -> None:
    def second_part(command: str, path: str, headers: Any) -> bool:
        return command == "PUT" and "partNumber=2&" in path + "&"

    with CuttingProxy(moto.port, cut=second_part) as proxy:
        store = Store(tmp_path / "a")
        cache = attach(store, _via(proxy, moto_remote), push=True)
        assert cache is not None
        recorder = Recorder()
        with log.use(recorder):
            entry = store.realize(STEP, build_into([]))
    assert proxy.cuts >= 1
    assert len(recorder.warnings) == 1, recorder.lines
    assert str(moto_remote.remote) in recorder.warnings[0]
    assert "building locally" in recorder.warnings[0]
    assert store.check(entry) == []  # the local build stands
    assert (cache.transfers.pushed, cache.transfers.pushed_bytes) == (0, 0)
    assert moto_remote.remote is not None
    bucket = moto_remote.remote.bucket
    keys_left = moto.target.keys(bucket)
    assert moto_remote.remote.object_key(manifest_name(STEP.key)) not in keys_left
    assert moto_remote.remote.object_key(blob_name(_sha(big_bytes()))) not in keys_left
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")  # aborted
