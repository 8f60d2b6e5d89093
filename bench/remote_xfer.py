"""The remote-cache benchmark's child processes: eifbuild's push and pull of a store's entries, and
the raw boto3 transfer of the same blobs (the limit), each run as its own timed command.

    python bench/remote_xfer.py synth STORE MIB            # a store with a MIB-sized entry and small ones
    python bench/remote_xfer.py push STORE URL             # push_entry for every entry (as `cache push`)
    python bench/remote_xfer.py pull STORE EMPTY URL       # pull every entry of STORE into EMPTY, check
    python bench/remote_xfer.py raw-up STORE URL           # s3transfer upload of the same blobs
    python bench/remote_xfer.py raw-down URL DIR [verify]  # s3transfer download of every blob under URL
    python bench/remote_xfer.py make-bucket NAME | delete URL

The endpoint and CA bundle come from $BENCH_S3_ENDPOINT and $BENCH_S3_CA_BUNDLE, the keys from
$BENCH_TRUSTED_KEY (a trusted_keys line) and $EIFBUILD_CACHE_SIGNING_KEY, credentials from
boto3's chain. The raw transfers use s3transfer (what ``aws s3 cp --recursive`` runs) with its
default TransferConfig (8 MiB threshold and parts, 10 threads, across files too) and the client
settings eifbuild needs for Ceph RGW over HTTPS (checksums only when required).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from eifbuild.store import Step, Store
from eifbuild.store.remote import CacheSettings, RemoteCache, push_entry
from eifbuild.store.remote.config import parse_named_key, parse_s3_url
from eifbuild.store.remote.manifest import SecretKey
from eifbuild.store.remote.substitute import pull_entry
from eifbuild.store.step import RawParams


def _settings(url: str) -> CacheSettings:
    key = parse_named_key(os.environ["BENCH_TRUSTED_KEY"])
    assert key is not None
    return CacheSettings(
        remote=parse_s3_url(url),
        endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
        region="us-east-1",
        trusted_keys=(key,),
        signing_key_file=os.environ.get("EIFBUILD_CACHE_SIGNING_KEY"),
        ca_bundle=os.environ.get("BENCH_S3_CA_BUNDLE") or None,
    )


def synth(store_dir: str, mib: str) -> None:
    """One entry with a big file (odd size) and 20 small ones, and one of 3 medium files."""
    store = Store(store_dir)

    def big(_: RawParams, out: Path) -> None:
        with open(out / "big.bin", "wb") as fh:
            for i in range(int(mib)):
                fh.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))
            fh.write(b"odd")
        for i in range(20):
            (out / f"small-{i}.txt").write_bytes(f"small file {i}\n".encode() * (100 * i + 1))

    def medium(_: RawParams, out: Path) -> None:
        for i in range(3):
            (out / f"medium-{i}.bin").write_bytes(os.urandom(3 << 20))

    store.realize(Step(RawParams("bench-big", 1, {"mib": int(mib)})), big)
    store.realize(Step(RawParams("bench-medium", 1)), medium)


def push(store_dir: str, url: str) -> None:
    store = Store(store_dir)
    cache = RemoteCache(_settings(url))
    key = SecretKey.load(os.environ["EIFBUILD_CACHE_SIGNING_KEY"])
    for entry in store.entries():
        push_entry(cache, store, entry, key)
    print(f"pushed {cache.transfers.pushed} entries, {cache.transfers.pushed_bytes} bytes")


def _no_build(*_: Any) -> None:
    raise SystemExit("an entry was not pulled")


def pull(store_dir: str, empty_dir: str, url: str) -> None:
    source, target = Store(store_dir), Store(empty_dir)
    cache = RemoteCache(_settings(url))
    target.substituter = lambda step, out: pull_entry(cache, step, out)
    for entry in source.entries():
        pulled = target.realize(Step.recorded(entry.record["step"]), _no_build)
        if pulled.outputs != entry.outputs:
            raise SystemExit(f"pulled entry {entry.key} differs from the pushed one")
    print(f"pulled {cache.transfers.pulled} entries, {cache.transfers.pulled_bytes} bytes")


def _client() -> Any:
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    config = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=10,
    )
    return boto3.client(
        "s3",
        endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
        region_name="us-east-1",
        verify=os.environ.get("BENCH_S3_CA_BUNDLE") or None,
        config=config,
    )


def _manager(client: Any) -> Any:
    from boto3.s3.transfer import TransferConfig, create_transfer_manager  # noqa: PLC0415

    return create_transfer_manager(client, TransferConfig())


def raw_up(store_dir: str, url: str) -> None:
    s3url = parse_s3_url(url)
    assert s3url is not None
    blobs = {
        spec["sha256"]: entry.path / name
        for entry in Store(store_dir).entries()
        for name, spec in entry.outputs.items()
        if spec["type"] == "file"
    }
    with _manager(_client()) as manager:
        futures = [
            manager.upload(str(path), s3url.bucket, s3url.object_key(f"blobs/sha256/{sha}"))
            for sha, path in sorted(blobs.items())
        ]
        for future in futures:
            future.result()
    print(f"uploaded {len(blobs)} blobs, {sum(p.stat().st_size for p in blobs.values())} bytes")


def raw_down(url: str, out_dir: str, verify: str = "") -> None:
    """``verify`` ("verify"): then check each file's sha256 against its name, as a second pass
    (``aws s3 cp`` followed by ``sha256sum -c``: the raw transfer plus the check eifbuild makes)."""
    s3url = parse_s3_url(url)
    assert s3url is not None
    client = _client()
    prefix = s3url.object_key("blobs/")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3url.bucket, Prefix=prefix)
    objects = [(obj["Key"], obj["Size"]) for page in pages for obj in page.get("Contents", [])]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _manager(client) as manager:
        futures = [
            manager.download(s3url.bucket, key, str(out / key.rsplit("/", 1)[-1])) for key, _ in objects
        ]
        for future in futures:
            future.result()
    if verify:
        for path in sorted(out.iterdir()):
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() != path.name:
                raise SystemExit(f"blob {path.name} has sha256 {digest.hexdigest()}")
    got = sum(p.stat().st_size for p in out.iterdir())
    if got != sum(size for _, size in objects):
        raise SystemExit("raw download is short")
    print(f"downloaded {len(objects)} blobs, {got} bytes")


def make_bucket(name: str) -> None:
    _client().create_bucket(Bucket=name)


def delete(url: str) -> None:
    """Remove every object under the URL's prefix (untimed, between runs: Ceph keeps them in RAM)."""
    s3url = parse_s3_url(url)
    assert s3url is not None
    client = _client()
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=s3url.bucket, Prefix=s3url.object_key("") + "/"
    )
    for page in pages:
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=s3url.bucket, Delete={"Objects": keys})


COMMANDS = {
    "synth": synth,
    "push": push,
    "pull": pull,
    "raw-up": raw_up,
    "raw-down": raw_down,
    "make-bucket": make_bucket,
    "delete": delete,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
