"""The store and what fills it: content-addressed entries (``local``), downloads of pinned sources
and their shared cache (``download``), registry blobs on their way in (``blobs``), and the shared
build cache on S3 that substitutes entries (the ``remote`` subpackage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .blobs import BlobDownloads, check_blob
    from .download import (
        Downloaded,
        Downloader,
        HttpOptions,
        SourceCache,
        apt_download,
        download_checked,
        failure_reason,
    )
    from .local import Garbage, Step, Store, StoreEntry, Substituted, canonical_json, describe_garbage

__all__ = [
    "BlobDownloads",
    "Downloaded",
    "Downloader",
    "Garbage",
    "HttpOptions",
    "SourceCache",
    "Step",
    "Store",
    "StoreEntry",
    "Substituted",
    "apt_download",
    "canonical_json",
    "check_blob",
    "describe_garbage",
    "download_checked",
    "failure_reason",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
