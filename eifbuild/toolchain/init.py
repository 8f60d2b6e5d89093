"""The enclave's init: eifbuild's own source and how any init.c is compiled (without importing zig
until a compile runs: the planner names these at doit's start-up)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..arch import Arch
    from ..store import Store, StoreEntry

EIFBUILD_INIT_C: Final = Path(__file__).parent.parent / "init" / "init.c"  # the "eifbuild-init" source
# Upstream's warnings for AWS init.c; clang also wants -Wno-missing-field-initializers for its ops[].
INIT_CFLAGS: Final = ("-Wall", "-Wextra", "-Werror", "-Wno-missing-field-initializers")
INIT_OUTPUT: Final = "init"


def init_from_source(store: Store, init_c: Path, arch: Arch, *, cflags: Sequence[str] = ()) -> StoreEntry:
    """Compile an init (AWS's init.c or any other) with upstream's strict warnings into output ``init``."""
    from .zig import compile_c  # noqa: PLC0415 - zig's code only when an init is compiled

    return compile_c(store, [init_c], arch=arch, cflags=[*INIT_CFLAGS, *cflags], output_name=INIT_OUTPUT)
