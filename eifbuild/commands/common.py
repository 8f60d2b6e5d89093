"""What the command modules share: exit codes, the store option."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..store import Store

if TYPE_CHECKING:
    import argparse

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # a check ran and found a problem
EXIT_ERROR: Final = 2  # bad input or usage

Adder = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

STORE_HELP: Final = "store directory (default: $EIFBUILD_CACHE, else cache/ next to eif.toml)"


def store_of(args: argparse.Namespace) -> Store:
    return Store(args.cache) if args.cache else Store.for_cwd()
