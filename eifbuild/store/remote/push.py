"""Push: copy store entries into the remote cache, blobs first and the signed manifest last.

A visible manifest therefore always has complete blobs. Blobs are named by their sha256 and
manifests by their key, and both are written with ``If-None-Match: *``: two pushers of the same
entry write the same bytes and the first one wins. The blobs go up in parallel, a big one as a
multipart upload (unconditional: its name is its content; ``_transfer``). An entry is re-hashed
before it is pushed, so a corrupt local entry never reaches the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ... import log
from ...errors import StoreError
from ._transfer import Upload, each, upload
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
    files = sorted((name, spec) for name, spec in entry.outputs.items() if spec["type"] == "file")
    blobs = {str(spec["sha256"]): name for name, spec in files}  # one upload per distinct content
    sizes = {sha: int(entry.outputs[name]["size"]) for sha, name in blobs.items()}
    states = each(lambda sha: _blob_state(cache, sha, sizes[sha]), list(blobs))
    uploads = [
        Upload(blob_name(sha), str(entry.path / name), sha, sizes[sha])
        for (sha, name), state in zip(blobs.items(), states, strict=True)
        if state == "absent"
    ]
    # the blobs this push wrote or refreshed: checked again after the manifest (see _recheck)
    written = {sha for sha, state in zip(blobs, states, strict=True) if state != "fresh"}
    with log.progress(f"push {entry.kind} {entry.key[:12]}", sum(u.size for u in uploads)) as bar:
        uploaded = upload(cache.bucket, uploads, on_chunk=bar.update)
    manifest = sign(body_of(entry), key)
    new = cache.bucket.put(manifest_name(entry.key), manifest, content_type="application/json")
    if new:
        uploaded += _recheck(cache, entry, blobs, written)
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


def _blob_state(cache: RemoteCache, sha256: str, size: int) -> Literal["fresh", "refreshed", "absent"]:
    """Whether the blob is in the bucket and will stay there until the manifest is written: "fresh"
    when it is younger than ``cache.blob_reuse_age`` (a prune deletes only blobs older than its
    grace period), "refreshed" when it was older and this push just refreshed it, else "absent"."""
    info = cache.bucket.stat(blob_name(sha256))
    if info is None:
        return "absent"
    if info.age < cache.blob_reuse_age:
        return "fresh"
    if not cache.bucket.touch(blob_name(sha256), content_type=BLOB_TYPE, size=size):
        return "absent"
    return "refreshed"


def _recheck(cache: RemoteCache, entry: StoreEntry, blobs: dict[str, str], written: set[str]) -> int:
    """After the manifest: upload again any blob this push wrote or refreshed that a prune deleted in
    the moment between its own check and its delete (its count of bytes uploaded)."""
    shas = sorted(written)
    gone = [
        sha
        for sha, found in zip(shas, each(lambda sha: cache.bucket.exists(blob_name(sha)), shas), strict=True)
        if not found
    ]
    again = [
        Upload(blob_name(sha), str(entry.path / blobs[sha]), sha, int(entry.outputs[blobs[sha]]["size"]))
        for sha in gone
    ]
    return upload(cache.bucket, again, on_chunk=lambda _: None) if again else 0
