"""Push: copy store entries into the remote cache, blobs first and the signed manifest last.

A visible manifest therefore always has complete blobs. Blobs are named by their sha256 and
manifests by their key, and both are written with ``If-None-Match: *``: two pushers of the same
entry write the same bytes and the first one wins. The blobs go up in parallel, a big one as a
multipart upload (unconditional: its name is its content; ``_transfer``). An entry is re-hashed
before it is pushed, so a corrupt local entry never reaches the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ... import log
from ...errors import StoreError
from ._transfer import Upload, missing, upload
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
    if cache.bucket.exists(manifest_name(entry.key)):
        return Pushed(entry.key, 0, new=False)
    problems = store.check(entry) if check else []
    if problems:
        msg = f"not pushed, it is corrupt ({problems[0]}); run 'eifbuild store verify --repair'"
        raise StoreError(msg, key=entry.key)
    files = sorted((name, spec) for name, spec in entry.outputs.items() if spec["type"] == "file")
    blobs = {str(spec["sha256"]): name for name, spec in files}  # one upload per distinct content
    lacking = missing(cache.bucket, [blob_name(sha) for sha in blobs])
    uploads = [
        Upload(blob_name(sha), str(entry.path / name), sha, int(entry.outputs[name]["size"]))
        for (sha, name), lacks in zip(blobs.items(), lacking, strict=True)
        if lacks
    ]
    with log.progress(f"push {entry.kind} {entry.key[:12]}", sum(u.size for u in uploads)) as bar:
        uploaded = upload(cache.bucket, uploads, on_chunk=bar.update)
    manifest = sign(body_of(entry), key)
    new = cache.bucket.put(manifest_name(entry.key), manifest, content_type="application/json")
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
