"""Ramdisks: the newc cpio writer and reader and the two Nitro layouts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .layout import Modes, app_entries, bootstrap_entries, list_archive, parse_env_args, tree_entries
    from .newc import COMPRESSIONS, Compression, Entry, eif_alignment, write_cpio, write_cpio_file
    from .reader import CpioMember, read_cpio

EXPORTS = {
    "COMPRESSIONS": ".newc",
    "Modes": ".layout",
    "app_entries": ".layout",
    "bootstrap_entries": ".layout",
    "list_archive": ".layout",
    "parse_env_args": ".layout",
    "tree_entries": ".layout",
    "Compression": ".newc",
    "Entry": ".newc",
    "eif_alignment": ".newc",
    "write_cpio": ".newc",
    "write_cpio_file": ".newc",
    "CpioMember": ".reader",
    "read_cpio": ".reader",
}

__all__ = [
    "COMPRESSIONS",
    "Compression",
    "CpioMember",
    "Entry",
    "Modes",
    "app_entries",
    "bootstrap_entries",
    "eif_alignment",
    "list_archive",
    "parse_env_args",
    "read_cpio",
    "tree_entries",
    "write_cpio",
    "write_cpio_file",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
