"""Pull: fill a store step's output dir from the remote cache, verifying every byte on the way.

The store calls :func:`pull_entry` under the step's lock when it lacks the key. The manifest must
verify (:func:`~eifbuild.remote.manifest.open_manifest`); each file is streamed from its
content-addressed blob and hashed while written, and a wrong size or sha256 refuses the entry. The
store then hashes the outputs again as it commits them, like any built step.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ... import log
from ...errors import RemoteCacheError
from ...util.fsutil import StreamHasher
from ...util.safetree import UnsafePathError, tree_writer
from ..local import Substituted
from .cache import blob_name, manifest_name
from .manifest import ManifestRefused, open_manifest

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ...util.safetree import TreeWriter
    from ..step import Step
    from .cache import RemoteCache
    from .manifest import Manifest


def pull_entry(cache: RemoteCache, step: Step[Any], out: Path) -> Substituted | None:
    """Fill ``out`` with the remote entry of ``step``; None (after saying why) to build locally."""
    if cache.down is not None:
        return None
    try:
        data = cache.bucket.get_bytes(manifest_name(step.key))
        if data is None:
            cache.missing(step)
            return None
        manifest = open_manifest(data, key=step.key, trusted=cache.trusted)
        _fetch(cache, manifest, out)
    except ManifestRefused as exc:
        cache.refused(step, str(exc))
        return None
    except RemoteCacheError as exc:
        cache.unreachable(exc)
        return None
    cache.transfers.pulled += 1
    cache.transfers.pulled_bytes += manifest.size
    size = manifest.size
    log.step(f"pulled {step.kind} {step.key[:12]} ({size} bytes, trusted by {manifest.trusted_by})")
    return Substituted(manifest.meta, str(cache.url))


def _fetch(cache: RemoteCache, manifest: Manifest, out: Path) -> None:
    """Write the entry into ``out`` with the one safe tree writer: the manifest's listing was checked
    already (no path through a symlink), and the writer never follows one whatever it says."""
    try:
        with tree_writer(out) as writer:
            for rel in manifest.dirs:
                writer.mkdir(rel, 0o755)
            for name, spec in sorted(manifest.outputs.items()):
                if spec["type"] == "symlink":
                    writer.symlink(name, spec["target"])
                else:
                    _fetch_file(cache, writer, name, spec)
    except UnsafePathError as exc:
        msg = f"corrupt entry: {exc}"
        raise ManifestRefused(msg) from None


def _fetch_file(cache: RemoteCache, writer: TreeWriter, name: str, spec: Mapping[str, Any]) -> None:
    sha256, size = str(spec["sha256"]), int(spec["size"])
    hasher = StreamHasher()
    with writer.open_file(name) as fh, log.progress(f"pull {name}", size) as bar:
        os.fchmod(fh.fileno(), 0o755 if spec.get("executable") else 0o644)
        found = cache.bucket.download(blob_name(sha256), fh, hasher, on_chunk=bar.update)
    if not found:
        msg = f"blob {sha256} of {name!r} is missing"
        raise ManifestRefused(msg)
    if hasher.size != size or hasher.hexdigest() != sha256:
        got = f"{hasher.size} bytes with sha256 {hasher.hexdigest()}"
        msg = f"blob of {name!r} is {got}, expected {size} bytes {sha256}"
        raise ManifestRefused(msg)


def verify_remote_entry(cache: RemoteCache, key: str, scratch: Path) -> str | None:
    """Re-check one remote entry (signature, then every blob's size and sha256, downloaded into
    ``scratch``); None when it is intact, else what is wrong. Transport errors propagate."""
    data = cache.bucket.get_bytes(manifest_name(key))
    if data is None:
        return "missing"
    try:
        manifest = open_manifest(data, key=key, trusted=cache.trusted)
        _fetch(cache, manifest, scratch)
    except ManifestRefused as exc:
        return str(exc)
    return None
