"""The subcommands of ``eifbuild``, one module per area; each lists its parsers in ``COMMANDS``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import attestation, boot, cache, eif, init, inspect, oci, provenance, qemu, sources, tools

if TYPE_CHECKING:
    from .common import Adder

COMMANDS: list[Adder] = [
    *init.COMMANDS,
    *eif.COMMANDS,
    *inspect.COMMANDS,
    *tools.COMMANDS,
    *sources.COMMANDS,
    *oci.COMMANDS,
    *boot.COMMANDS,
    *qemu.COMMANDS,
    *cache.COMMANDS,
    *attestation.COMMANDS,
    *provenance.COMMANDS,
]
