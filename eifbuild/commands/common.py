"""What the command modules share: exit codes, the store option and the one rule for the default store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..eif import HASH_ALGOS
from ..store import Store

if TYPE_CHECKING:
    import argparse

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # a check ran and found a problem
EXIT_ERROR: Final = 2  # bad input or usage

Adder = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

STORE_HELP: Final = (
    "store directory (default: $EIFBUILD_CACHE, else cache/ next to the eif.toml at or above the "
    "current directory, else the user's cache directory: ~/.cache/eifbuild/store on Linux)"
)


def default_store() -> Store:
    """``$EIFBUILD_CACHE``, else ``cache/`` of the project around the current directory, else the
    user's store (outside a project nothing is written into the current directory)."""
    from ..plan import find_project  # noqa: PLC0415 - eif.toml's rules only when needed

    project = find_project()
    return Store.for_user() if project is None else Store.for_project(project)


def store_of(args: argparse.Namespace) -> Store:
    """The store a command uses: ``--cache DIR``, else :func:`default_store`."""
    return Store(args.cache) if args.cache else default_store()


def add_algo(p: argparse.ArgumentParser) -> None:
    """``--algo``: the hash PCRs are computed with (the hypervisor's is SHA-384)."""
    p.add_argument("--algo", default="sha384", choices=HASH_ALGOS, help="PCR hash (default sha384)")
