"""Pull: fill a store step's output dir from the remote cache, verifying every byte on the way.

The store calls :func:`pull_entry` under the step's lock when it lacks the key. The manifest must
verify (:func:`~eifbuild.remote.manifest.open_manifest`); each file is streamed from its
content-addressed blob (in parallel, big blobs in ranges: ``_transfer``) and hashed as it lands, and
a wrong size or sha256 refuses the entry. The store commits that listing as its record without
reading the files again; nothing is committed when any blob was wrong.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

from ... import log
from ...errors import RemoteCacheError
from ...util.safetree import UnsafePathError, tree_writer
from ..local import Substituted
from ._transfer import Want, download
from .cache import blob_name, manifest_name
from .manifest import ManifestRefused, open_manifest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from ...util.safetree import TreeWriter
    from ..step import Step
    from .cache import RemoteCache
    from .manifest import Manifest

OPEN_FILES: Final = 256  # files of an entry downloaded (and open) at once


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
        outputs = _fetch(cache, manifest, out, f"pull {step.kind} {step.key[:12]}")
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
    return Substituted(manifest.meta, str(cache.url), outputs)


def _fetch(cache: RemoteCache, manifest: Manifest, out: Path, label: str) -> dict[str, dict[str, Any]]:
    """Write the entry into ``out`` with the one safe tree writer (the manifest's listing was checked
    already: no path through a symlink, and the writer never follows one whatever it says); return
    its listing as the store records it, every file hashed once as it landed."""
    outputs: dict[str, dict[str, Any]] = {}
    files = manifest.files()
    try:
        with tree_writer(out) as writer, log.progress(label, manifest.size) as bar:
            for rel in manifest.dirs:
                writer.mkdir(rel, 0o755)
            for name, spec in sorted(manifest.outputs.items()):
                if spec["type"] == "symlink":
                    writer.symlink(name, spec["target"])
                    outputs[name] = {"type": "symlink", "target": spec["target"]}
            names = sorted(files)
            for start in range(0, len(names), OPEN_FILES):  # a bounded number of fds open at once
                batch = {name: files[name] for name in names[start : start + OPEN_FILES]}
                outputs.update(_fetch_files(cache, writer, batch, bar.update))
    except UnsafePathError as exc:
        msg = f"corrupt entry: {exc}"
        raise ManifestRefused(msg) from None
    return outputs


def _fetch_files(
    cache: RemoteCache,
    writer: TreeWriter,
    files: Mapping[str, Mapping[str, Any]],
    on_chunk: Callable[[int], object],
) -> dict[str, dict[str, Any]]:
    """Download ``files`` in parallel, each into a new file; return their listing."""
    with contextlib.ExitStack() as stack:
        wants = []
        for name, spec in files.items():
            fh = stack.enter_context(writer.open_file(name, readable=True))
            os.fchmod(fh.fileno(), 0o755 if spec.get("executable") else 0o644)
            sha256 = str(spec["sha256"])
            wants.append(Want(name, blob_name(sha256), sha256, int(spec["size"]), fh.fileno()))
        download(cache.bucket, wants, on_chunk=on_chunk)
    return {
        want.name: {
            "type": "file",
            "sha256": want.hasher.hexdigest(),
            "size": want.hasher.size,
            "executable": bool(files[want.name].get("executable")),
        }
        for want in wants
    }


def verify_remote_entry(cache: RemoteCache, key: str, scratch: Path) -> str | None:
    """Re-check one remote entry (signature, then every blob's size and sha256, downloaded into
    ``scratch``); None when it is intact, else what is wrong. Transport errors propagate."""
    data = cache.bucket.get_bytes(manifest_name(key))
    if data is None:
        return "missing"
    try:
        manifest = open_manifest(data, key=key, trusted=cache.trusted)
        _fetch(cache, manifest, scratch, f"verify {key[:12]}")
    except ManifestRefused as exc:
        return str(exc)
    return None
