"""Registry blobs on their way into the store: one download per digest at a time, resumable.

A layer blob from a registry is downloaded into the store's ``downloads/`` before the importer
reads it, by the store's :class:`~eifbuild.store.Downloader` (``Range`` resume, hashing while
streaming): ``<name>.part`` (and its resume state ``<name>.part.json``) while it streams, renamed
to ``<name>`` once its digest and size are checked. ``name`` is ``oci-blob-<algorithm>-<hex>``;
the store lock of that name is held only while this one blob is looked for or downloaded (never
while another is), so two imports never fetch a blob twice nor wait for each other in a cycle:
the second one waits, then reads the verified file. A killed import leaves its partial file,
which the next one resumes (hashing it again from its first byte). The verified file is removed
once the layer is committed; ``store gc`` removes what dead imports left.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Protocol

from ..errors import ArchiveError, HashMismatch
from .download import download_checked

if TYPE_CHECKING:
    import contextlib
    from pathlib import Path

    from .download import Downloaded
    from .local import Store


class BlobSource(Protocol):
    """Where blobs come from (a registry): streams one into ``part``, resuming what is there."""

    def download(self, digest: str, part: Path, *, max_size: int | None, label: str) -> Downloaded: ...


def download_name(digest: str) -> str:
    """The store lock and file name of a blob's download."""
    return "oci-blob-" + digest.replace(":", "-")


class BlobDownloads:
    """The store's ``downloads/`` area for registry blobs."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def lock(self, digest: str) -> contextlib.AbstractContextManager[None]:
        return self.store.lock(download_name(digest))

    def verified(self, digest: str) -> Path:
        return self.store.downloads_dir / download_name(digest)

    def part(self, digest: str) -> Path:
        return self.store.downloads_dir / f"{download_name(digest)}.part"

    def open(self, source: BlobSource, digest: str, size: int | None, what: str) -> IO[bytes]:
        """The verified blob, downloaded (or resumed) first when no process did; call under :meth:`lock`."""
        path = self.verified(digest)
        if not path.is_file():
            self._download(source, digest, size, what)
            os.replace(self.part(digest), path)
        return open(path, "rb")

    def remove(self, digest: str) -> None:
        """Drop the verified blob (its layer is in the store now)."""
        with self.lock(digest):
            self.verified(digest).unlink(missing_ok=True)

    def _download(self, source: BlobSource, digest: str, size: int | None, what: str) -> None:
        def fetch() -> Downloaded:
            return source.download(digest, self.part(digest), max_size=size, label=f"layer {digest[7:19]}")

        download_checked(fetch, lambda got: _check(got, digest, size, what), what=what)


def check_blob(what: str, digest: str, actual: str, size: int, declared: int | None) -> None:
    """A blob's ``actual`` digest and ``size`` against its descriptor's ``digest`` and ``declared`` size."""
    if actual != digest:
        raise HashMismatch(what, expected=digest, actual=actual)
    if declared is not None and size != declared:
        msg = f"{what}: {size} bytes, but its descriptor declares {declared}"
        raise ArchiveError(msg)


def _check(got: Downloaded, digest: str, size: int | None, what: str) -> None:
    algorithm = digest.partition(":")[0]
    check_blob(what, digest, f"{algorithm}:{got.digests[algorithm]}", got.size, size)
