"""Ramdisks: the newc cpio writer and reader and the two Nitro layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .layout import (
        ROOTFS_DIRS,
        Modes,
        Spec,
        Symlink,
        app_entries,
        bootstrap_entries,
        list_archive,
        mapping_entries,
        normalized_mode,
        parse_env_args,
        scan_tree,
        tree_entries,
    )
    from .newc import (
        COMPRESSIONS,
        Compression,
        Entry,
        FileContent,
        WriteResult,
        eif_alignment,
        write_cpio,
        write_cpio_file,
    )
    from .reader import CpioMember, Readable, read_cpio

__all__ = [
    "COMPRESSIONS",
    "ROOTFS_DIRS",
    "Compression",
    "CpioMember",
    "Entry",
    "FileContent",
    "Modes",
    "Readable",
    "Spec",
    "Symlink",
    "WriteResult",
    "app_entries",
    "bootstrap_entries",
    "eif_alignment",
    "list_archive",
    "mapping_entries",
    "normalized_mode",
    "parse_env_args",
    "read_cpio",
    "scan_tree",
    "tree_entries",
    "write_cpio",
    "write_cpio_file",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
