"""Prune the remote cache (issue #24): keep the manifests pushed or marked in use in the last N days
and every blob they name; delete the rest, safely while others push.

S3 has no conditional delete, so safety comes from time bounds, all measured on the server's clock
(LastModified against the Date of a response). Let G be the grace period and R the age up to which a
pusher reuses a blob it finds (``BLOB_REUSE_AGE``); a push must take less than G - R.

- A pusher writes blobs first and its manifest last. It reuses a blob it finds only if the blob is
  younger than R, else it refreshes it (a self-copy, so LastModified becomes now) or uploads it.
  A build that finds an entry's manifest older than a day marks it in use the same way.
- A prune lists the blobs first, at server time t0; reads every manifest and deletes the expired ones
  (LastModified before t0 - N, checked again with HEAD just before each DELETE); lists the manifests
  again and keeps every blob that any manifest still there names; and deletes the other blobs only if
  older than t0 - G, again checked with HEAD just before each DELETE.

Why a blob a push relies on survives: if the push saw it younger than R at time h and the prune saw
the same object older than t0 - G, then h < t0 - (G - R), so the push's manifest was written before
t0 and the second listing of manifests keeps the blob. What remains is a blob written (refreshed or
uploaded) between the prune's HEAD and its DELETE of it. Two checks close that: a pusher HEADs the
blobs it wrote or refreshed again after writing its manifest and uploads any that went missing, and a
prune, after deleting blobs, reads the manifests written meanwhile and deletes any that names a blob
it deleted that is still missing. Either way no manifest is left naming a missing blob (for a moment
one may be, and a puller then refuses the entry and builds it).

A prune never deletes a manifest it did not read and parse (nor one that changed since), and never
touches an object outside ``manifests/*.json`` and ``blobs/sha256/<64 hex>``. A manifest it cannot
parse is kept and reported, and then no blob is deleted in that run: it might name any of them.
Signatures are not checked (a prune keeps the blobs of any manifest), but the JSON is decoded by the
bounded decoder, at most ``MAX_MANIFEST`` bytes.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ...errors import UsageError
from ._s3 import MAX_MANIFEST
from .cache import _size, blob_name
from .manifest import ManifestRefused, decode_manifest, parse_outputs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from ._s3 import ObjectInfo
    from .cache import RemoteCache

MANIFESTS: Final = "manifests/"
BLOBS: Final = "blobs/sha256/"
_BLOB_RE: Final = re.compile(r"blobs/sha256/[0-9a-f]{64}")
_MANIFEST_RE: Final = re.compile(r"manifests/[^/]+\.json")


@dataclass(frozen=True)
class Removed:
    """An object a prune deleted (or would delete, in a dry run)."""

    name: str
    size: int
    last_modified: datetime.datetime


@dataclass
class PruneReport:
    url: str
    dry_run: bool
    now: datetime.datetime  # t0: the server's time when the blobs were listed (or the caller's)
    manifests_deleted: list[Removed] = field(default_factory=list)
    blobs_deleted: list[Removed] = field(default_factory=list)
    manifests_kept: int = 0
    blobs_kept: int = 0
    unreadable: list[str] = field(default_factory=list)  # manifests kept: they could not be parsed
    refreshed: list[str] = field(default_factory=list)  # expired when listed, in use by the DELETE
    raced: list[str] = field(default_factory=list)  # manifests written meanwhile naming deleted blobs

    @property
    def bytes_freed(self) -> int:
        return sum(r.size for r in (*self.manifests_deleted, *self.blobs_deleted))

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        parts = [
            f"{verb} {len(self.manifests_deleted)} manifests and {len(self.blobs_deleted)} blobs"
            f" ({_size(self.bytes_freed)})",
            f"kept {self.manifests_kept} manifests and {self.blobs_kept} blobs",
        ]
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} manifests unreadable, so no blob was deleted")
        if self.raced:
            parts.append(f"{len(self.raced)} manifests pushed meanwhile deleted again")
        return f"pruned {self.url}: {', '.join(parts)}"


def blobs_named(data: bytes) -> frozenset[str]:
    """The sha256 of every file a manifest names, read without checking signatures (the outputs
    checked as a pull checks them); ValueError with a one-line reason when it is not a manifest this
    version understands."""
    try:
        _, body = decode_manifest(data)
        outputs = parse_outputs(body.get("outputs"))
    except ManifestRefused as exc:
        raise ValueError(str(exc)) from None
    return frozenset(str(out["sha256"]) for out in outputs.values() if out["type"] == "file")


class _Pruner:
    def __init__(self, cache: RemoteCache, report: PruneReport, echo: Callable[[str], object] | None) -> None:
        self.cache = cache
        self.bucket = cache.bucket
        self.report = report
        self.echo = echo or (lambda _: None)
        self.read: dict[tuple[str, str], frozenset[str] | None] = {}  # (name, etag) -> blobs named

    def manifests(self) -> list[ObjectInfo]:
        listed, _ = self.bucket.listing(MANIFESTS)
        return [info for info in listed if _MANIFEST_RE.fullmatch(info.name)]

    def named(self, info: ObjectInfo) -> frozenset[str] | None:
        """The blobs the manifest names (None: it could not be parsed), read once per version."""
        version = (info.name, info.etag)
        if version not in self.read:
            self.read[version] = self._parse(info)
        return self.read[version]

    def _parse(self, info: ObjectInfo) -> frozenset[str] | None:
        if info.size > MAX_MANIFEST:
            reason = f"larger than {MAX_MANIFEST} bytes"
        else:
            got = self.bucket.read(info.name)
            if got is None:  # deleted since the listing: it names nothing any more
                return frozenset()
            data, read = got
            named = self._decode(info.name, data)
            self.read[(info.name, read.etag)] = named  # replaced since the listing: what is there now
            return named
        self._unreadable(info.name, reason)
        return None

    def _decode(self, name: str, data: bytes) -> frozenset[str] | None:
        try:
            return blobs_named(data)
        except ValueError as exc:
            self._unreadable(name, str(exc))
            return None

    def _unreadable(self, name: str, reason: str) -> None:
        if name not in self.report.unreadable:
            self.report.unreadable.append(name)
            self.echo(f"kept {name}: cannot read it ({reason})")

    def delete(self, info: ObjectInfo, before: datetime.datetime, kind: str) -> bool:
        """Delete the object if it is still the version listed and older than ``before`` (HEAD just
        before the DELETE); False when it changed, was refreshed or is gone."""
        now = self.bucket.stat(info.name)
        if now is None:
            return False
        if now.etag != info.etag or now.last_modified >= before:
            self.report.refreshed.append(info.name)
            self.echo(f"kept {info.name}: refreshed since it was listed")
            return False
        removed = Removed(info.name, info.size, info.last_modified)
        if self.report.dry_run:
            self.echo(f"would delete {kind} {info.name} ({_size(info.size)}, {_when(info)})")
        else:
            self.bucket.delete(info.name)
            self.echo(f"deleted {kind} {info.name} ({_size(info.size)}, {_when(info)})")
        (self.report.manifests_deleted if kind == "manifest" else self.report.blobs_deleted).append(removed)
        return True


def _when(info: ObjectInfo) -> str:
    return f"last written {info.last_modified.astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M}Z"


def prune(
    cache: RemoteCache,
    *,
    keep: datetime.timedelta,
    grace: datetime.timedelta = datetime.timedelta(hours=24),
    dry_run: bool = False,
    now: datetime.datetime | None = None,
    echo: Callable[[str], object] | None = None,
) -> PruneReport:
    """Delete the manifests not pushed or marked in use within ``keep`` before now, then the blobs
    older than ``grace`` that no manifest still there names; ``echo`` gets one line per deletion.
    ``now`` (tests) stands for the server's time."""
    if keep < datetime.timedelta(0):
        msg = "the time to keep entries must not be negative"
        raise UsageError(msg, key="keep")
    if grace <= cache.blob_reuse_age:
        hours = cache.blob_reuse_age.total_seconds() / 3600
        msg = f"the grace period must be longer than {hours:g} hours (pushers reuse blobs that young)"
        raise UsageError(msg, key="grace")
    blobs, server_time = cache.bucket.listing(BLOBS)  # first: its time is t0
    t0 = now or server_time or datetime.datetime.now(datetime.timezone.utc)
    report = PruneReport(str(cache.url), dry_run, t0)
    pruner = _Pruner(cache, report, echo)
    gone = _expire(pruner, pruner.manifests(), t0 - keep)
    keep_set = _keep_set(pruner, gone)
    blobs = [info for info in blobs if _BLOB_RE.fullmatch(info.name)]
    report.blobs_kept = len(blobs)
    if report.unreadable:
        pruner.echo(f"no blob deleted: {len(report.unreadable)} manifests could not be read")
        return report
    deleted: set[str] = set()
    for info in sorted(blobs, key=lambda i: i.name):
        sha = info.name.removeprefix(BLOBS)
        if sha in keep_set or info.last_modified >= t0 - grace:
            continue
        if pruner.delete(info, t0 - grace, "blob"):
            deleted.add(sha)
    report.blobs_kept -= len(deleted)
    if deleted and not dry_run:
        _undo_races(pruner, deleted)
    return report


def _expire(pruner: _Pruner, listed: Iterable[ObjectInfo], cutoff: datetime.datetime) -> dict[str, str]:
    """Delete the manifests last written before ``cutoff`` (read and parsed first); {name: etag}."""
    gone: dict[str, str] = {}
    for info in sorted(listed, key=lambda i: i.name):
        if pruner.named(info) is None or info.last_modified >= cutoff:
            continue
        if pruner.delete(info, cutoff, "manifest"):
            gone[info.name] = info.etag
    return gone


def _keep_set(pruner: _Pruner, gone: dict[str, str]) -> set[str]:
    """Every blob named by a manifest there now (a dry run counts its expired ones as gone)."""
    keep: set[str] = set()
    kept = 0
    for info in pruner.manifests():
        if pruner.report.dry_run and gone.get(info.name) == info.etag:
            continue
        kept += 1
        keep |= pruner.named(info) or set()
    pruner.report.manifests_kept = kept
    return keep


def _undo_races(pruner: _Pruner, deleted: set[str]) -> None:
    """A manifest written while blobs were deleted may name one (a pusher refreshed it between our
    HEAD and DELETE): if that blob is still missing, delete the manifest, which a puller would refuse."""
    seen = set(pruner.read)
    for info in pruner.manifests():
        if (info.name, info.etag) in seen:
            continue
        lost = sorted((pruner.named(info) or frozenset()) & deleted)
        if any(pruner.bucket.stat(blob_name(sha)) is None for sha in lost):
            pruner.bucket.delete(info.name)
            pruner.report.raced.append(info.name)
            pruner.echo(f"deleted manifest {info.name}: pushed during the prune, it named a deleted blob")
