"""Pinned sources: recipes, eif.lock, downloads, archives, NAR hashes, fetching into the store.

- :mod:`.recipe`: recipe files (sources by name and arch, their pins);
- :mod:`.lock`: the eif.lock model (``eifbuild lock`` itself is :mod:`eifbuild.plan.locking`);
- :mod:`.archive`, :mod:`.nar`: reading source archives safely; Nix archive hashes;
- :mod:`.fetch`: a pinned source into the store, verified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .archive import (
        ZSTD_ERROR,
        ZSTD_MAGIC,
        detect_format,
        extract_member,
        nar_digest_of_archive,
        unpack,
        zstd_reader,
    )
    from .fetch import (
        Blob,
        FetchedSource,
        fetch_all,
        fetch_recipe,
        fetch_source,
        obtain,
        unpinned_error,
    )
    from .lock import LOCK_COMMAND, ImageEntry, Lock, LockEntry
    from .nar import NarDigest, nar_digest_of_path, parse_sri, to_sri
    from .recipe import Pins, Recipe, Source, SourceParams, load_recipe, parse_recipe

__all__ = [
    "LOCK_COMMAND",
    "ZSTD_ERROR",
    "ZSTD_MAGIC",
    "Blob",
    "FetchedSource",
    "ImageEntry",
    "Lock",
    "LockEntry",
    "NarDigest",
    "Pins",
    "Recipe",
    "Source",
    "SourceParams",
    "detect_format",
    "extract_member",
    "fetch_all",
    "fetch_recipe",
    "fetch_source",
    "load_recipe",
    "nar_digest_of_archive",
    "nar_digest_of_path",
    "obtain",
    "parse_recipe",
    "parse_sri",
    "to_sri",
    "unpack",
    "unpinned_error",
    "zstd_reader",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
