"""Push: copy store entries into the remote cache, blobs first and the signed manifest last.

A visible manifest therefore always has complete blobs. Blobs are named by their sha256 and
manifests by their key, and both are written with ``If-None-Match: *``: two pushers of the same
entry write the same bytes and the first one wins. An entry is re-hashed before it is pushed, so a
corrupt local entry never reaches the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ... import log
from ...errors import StoreError
from .cache import blob_name, manifest_name
from .manifest import body_of, sign

if TYPE_CHECKING:
    from ..local import Store, StoreEntry
    from .cache import RemoteCache
    from .manifest import SecretKey


@dataclass(frozen=True)
class Pushed:
    key: str
    uploaded_bytes: int
    new: bool  # False: the remote had this entry already


def push_entry(
    cache: RemoteCache, store: Store, entry: StoreEntry, key: SecretKey, *, check: bool = True
) -> Pushed:
    """Upload ``entry``'s missing blobs, then its manifest signed by ``key``; ``check=False`` for an
    entry the store hashed a moment ago (right after building it)."""
    if _found_and_marked(cache, entry.key):
        return Pushed(entry.key, 0, new=False)
    problems = store.check(entry) if check else []
    if problems:
        msg = f"not pushed, it is corrupt ({problems[0]}); run 'eifbuild store verify --repair'"
        raise StoreError(msg, key=entry.key)
    uploaded = 0
    written: set[str] = set()  # blobs (sha256) this push wrote or refreshed: checked after the manifest
    for name, spec in sorted(entry.outputs.items()):
        if spec["type"] != "file" or _reusable(cache, spec["sha256"], int(spec["size"]), written):
            continue
        written.add(spec["sha256"])
        with open(entry.path / name, "rb") as fh:
            blob = blob_name(spec["sha256"])
            if cache.bucket.put(blob, fh, content_type="application/octet-stream", sha256=spec["sha256"]):
                uploaded += int(spec["size"])
    manifest = sign(body_of(entry), key)
    new = cache.bucket.put(manifest_name(entry.key), manifest, content_type="application/json")
    if new:
        uploaded += _recheck(cache, entry, written)
    cache.transfers.pushed += int(new)
    cache.transfers.pushed_bytes += uploaded
    return Pushed(entry.key, uploaded, new)


def push_after_build(cache: RemoteCache, store: Store, key: SecretKey, entry: StoreEntry) -> None:
    """The store's ``on_built`` hook: push what was just built; a failure only warns."""
    from ...errors import RemoteCacheError  # noqa: PLC0415

    if cache.down is not None:
        return
    try:
        pushed = push_entry(cache, store, entry, key, check=False)  # _publish just hashed it
    except RemoteCacheError as exc:
        cache.unreachable(exc)
        return
    if pushed.new:
        log.step(f"pushed {entry.kind} {entry.key[:12]} ({pushed.uploaded_bytes} bytes)")


# -- what pruning needs from a push (issue #24; the argument is in pruning.py) -------------------------
BLOB_TYPE = "application/octet-stream"


def _found_and_marked(cache: RemoteCache, key: str) -> bool:
    """True when the remote has the entry; a manifest older than ``cache.mark_age`` is marked in use
    first (a self-copy). False also when a prune deleted it meanwhile: then it is pushed again."""
    info = cache.bucket.stat(manifest_name(key))
    if info is None:
        return False
    if info.age < cache.mark_age:
        return True
    return cache.bucket.touch(manifest_name(key), content_type="application/json")


def _reusable(cache: RemoteCache, sha256: str, size: int, written: set[str]) -> bool:
    """True when the blob is in the bucket and will stay there until the manifest is written: it is
    younger than ``cache.blob_reuse_age`` (a prune deletes only blobs older than its grace period),
    or it was older and this push just refreshed it (then it is named in ``written``)."""
    info = cache.bucket.stat(blob_name(sha256))
    if info is None:
        return False
    if info.age < cache.blob_reuse_age:
        return True
    if not cache.bucket.touch(blob_name(sha256), content_type=BLOB_TYPE, size=size):
        return False
    written.add(sha256)
    return True


def _recheck(cache: RemoteCache, entry: StoreEntry, written: set[str]) -> int:
    """After the manifest: upload again any blob this push wrote or refreshed that a prune deleted in
    the moment between its own check and its delete (its count of bytes uploaded)."""
    uploaded = 0
    for name, spec in sorted(entry.outputs.items()):
        if spec["type"] != "file" or spec["sha256"] not in written:
            continue
        sha = spec["sha256"]
        if cache.bucket.exists(blob_name(sha)):
            continue
        written.discard(sha)  # one upload per blob, however many outputs share it
        with open(entry.path / name, "rb") as fh:
            if cache.bucket.put(blob_name(sha), fh, content_type=BLOB_TYPE, sha256=sha):
                uploaded += int(spec["size"])
    return uploaded
