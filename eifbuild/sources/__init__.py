"""Pinned sources: recipes, eif.lock, archives, NAR hashes, fetching into the store (the bytes come
through :mod:`eifbuild.store`'s downloader and shared download cache).

- :mod:`.recipe`: recipe files (sources by name and arch, their pins);
- :mod:`.lock`: the eif.lock model (``eifbuild lock`` itself is :mod:`eifbuild.plan.locking`);
- :mod:`.archive`, :mod:`.nar`: reading source archives safely; Nix archive hashes;
- :mod:`.fetch`: a pinned source into the store, verified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .archive import ZSTD_ERROR, ZSTD_MAGIC, zstd_reader
    from .fetch import fetch_all, fetch_source, obtain, unpinned_error
    from .lock import LOCK_COMMAND, ImageEntry, Lock
    from .nar import nar_digest_of_path
    from .recipe import Recipe, Source, SourceParams, load_recipe

EXPORTS = {
    "ZSTD_ERROR": ".archive",
    "ZSTD_MAGIC": ".archive",
    "zstd_reader": ".archive",
    "fetch_all": ".fetch",
    "fetch_source": ".fetch",
    "obtain": ".fetch",
    "unpinned_error": ".fetch",
    "LOCK_COMMAND": ".lock",
    "ImageEntry": ".lock",
    "Lock": ".lock",
    "nar_digest_of_path": ".nar",
    "Recipe": ".recipe",
    "Source": ".recipe",
    "SourceParams": ".recipe",
    "load_recipe": ".recipe",
}

__all__ = [
    "LOCK_COMMAND",
    "ZSTD_ERROR",
    "ZSTD_MAGIC",
    "ImageEntry",
    "Lock",
    "Recipe",
    "Source",
    "SourceParams",
    "fetch_all",
    "fetch_source",
    "load_recipe",
    "nar_digest_of_path",
    "obtain",
    "unpinned_error",
    "zstd_reader",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
