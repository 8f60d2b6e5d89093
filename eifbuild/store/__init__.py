"""The store and what fills it: content-addressed entries (``local``), downloads of pinned sources
and their shared cache (``download``), registry blobs on their way in (``blobs``), and the shared
build cache on S3 that substitutes entries (the ``remote`` subpackage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .blobs import BlobDownloads, check_blob
    from .download import Downloaded, Downloader, SourceCache, apt_download, download_checked, failure_reason
    from .local import Garbage, Store, StoreEntry, describe_garbage
    from .step import Step, TypedParams, canonical_json

EXPORTS = {
    "download_checked": ".download",
    "BlobDownloads": ".blobs",
    "check_blob": ".blobs",
    "Downloaded": ".download",
    "Downloader": ".download",
    "SourceCache": ".download",
    "apt_download": ".download",
    "failure_reason": ".download",
    "Garbage": ".local",
    "Store": ".local",
    "StoreEntry": ".local",
    "describe_garbage": ".local",
    "Step": ".step",
    "TypedParams": ".step",
    "canonical_json": ".step",
}

__all__ = [
    "BlobDownloads",
    "Downloaded",
    "Downloader",
    "Garbage",
    "SourceCache",
    "Step",
    "Store",
    "StoreEntry",
    "TypedParams",
    "apt_download",
    "canonical_json",
    "check_blob",
    "describe_garbage",
    "download_checked",
    "failure_reason",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
