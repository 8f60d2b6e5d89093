"""One remote cache in use: where its objects live, whom it trusts, and what happens on failure.

Failure policy (the issue's rule): a remote that cannot be reached, or an entry that cannot be
trusted, costs one warning line naming the URL and the cause, then the step is built locally. After
the remote failed to answer once it is not asked again in this run (no timeout per step). With
``require`` (``EIFBUILD_REQUIRE_REMOTE=1``), every such case, and a miss, is a
:class:`RemoteCacheError` instead: a CI job that must not rebuild fails.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ... import log
from ...errors import ConfigError, RemoteCacheError
from ._s3 import S3Bucket
from .config import REQUIRE_ENV, SIGNING_KEY_ENV
from .manifest import SecretKey, trusted_keys

if TYPE_CHECKING:
    from ..step import Step
    from .config import CacheSettings, S3Url


@dataclass
class Transfers:
    """What moved in this run, for the summary line."""

    pulled: int = 0
    pulled_bytes: int = 0
    pushed: int = 0
    pushed_bytes: int = 0
    refused: list[str] = field(default_factory=list)

    def summary(self, url: S3Url) -> str:
        parts = [f"{self.pulled} entries pulled ({_size(self.pulled_bytes)})"]
        parts.append(f"{self.pushed} pushed ({_size(self.pushed_bytes)})")
        if self.refused:
            parts.append(f"{len(self.refused)} refused")
        return f"remote cache {url}: {', '.join(parts)}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


# Pruning (issue #24) relies on these two ages; see pruning.py for the argument.
# A pusher that finds an entry's manifest older than MARK_AGE marks it in use (a self-copy makes its
# LastModified now): one request per entry and day, none while the mark is fresh.
MARK_AGE: Final = datetime.timedelta(days=1)
# A pusher reuses a blob already in the bucket only if it is younger than BLOB_REUSE_AGE, and
# refreshes an older one first; a prune deletes only blobs older than its grace period, which must be
# longer than BLOB_REUSE_AGE plus the longest push.
BLOB_REUSE_AGE: Final = datetime.timedelta(hours=12)


def manifest_name(key: str) -> str:
    return f"manifests/{key}.json"


def blob_name(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


class RemoteCache:
    def __init__(self, settings: CacheSettings, bucket: S3Bucket | None = None) -> None:
        if settings.remote is None:
            msg = "no remote cache configured: set [cache] remote or $EIFBUILD_REMOTE_CACHE"
            raise ConfigError(msg)
        if settings.ca_bundle is not None and not os.path.isfile(settings.ca_bundle):
            msg = f"[cache] ca_bundle: {settings.ca_bundle} is not a file (expected PEM certificates)"
            raise ConfigError(msg)
        self.settings = settings
        self.url = settings.remote
        self.bucket = bucket or S3Bucket(
            settings.remote,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            ca_bundle=settings.ca_bundle,
        )
        self.trusted = trusted_keys(settings.trusted_keys)
        self.transfers = Transfers()
        self.down: str | None = None  # the cause, once the remote failed to answer
        self.mark_age = MARK_AGE  # tests shorten these two
        self.blob_reuse_age = BLOB_REUSE_AGE

    def signing_key(self) -> SecretKey:
        if not self.settings.signing_key_file:
            msg = f"pushing to the remote cache needs a signing key: set ${SIGNING_KEY_ENV} to its file"
            raise ConfigError(msg)
        return SecretKey.load(self.settings.signing_key_file)

    def unreachable(self, exc: RemoteCacheError) -> None:
        """The remote failed to answer: warn once and stop asking it (or fail, when required)."""
        if self.settings.require:
            raise exc
        if self.down is None:
            log.warn(f"{exc}; building locally")
        self.down = exc.message

    def refused(self, step: Step[Any], reason: str) -> None:
        """An entry that cannot be used (untrusted, tampered, incomplete): warn and build it here."""
        where = self.bucket.where(manifest_name(step.key))
        self.transfers.refused.append(step.key)
        if self.settings.require:
            msg = f"refused {step.kind} entry: {reason}"
            raise RemoteCacheError(msg, url=where)
        log.warn(f"remote cache {where}: refused {step.kind} entry: {reason}; building locally")

    def missing(self, step: Step[Any]) -> None:
        if self.settings.require:
            msg = f"has no {step.kind} entry {step.key} and ${REQUIRE_ENV}=1 forbids building it here"
            raise RemoteCacheError(msg, url=str(self.url))
        log.info(f"remote cache: no {step.kind} entry {step.key[:12]}")
