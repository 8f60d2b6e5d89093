"""vsock for QEMU's nitro-enclave machine: a vhost-user-vsock back-end that answers the enclave
heartbeat and forwards the guest's connections to host sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...util.lazy import lazy_exports

if TYPE_CHECKING:
    from .backend import DEFAULT_GUEST_CID, VsockBackend
    from .forward import HEARTBEAT_PORT, Forward, parse_forward, parse_forwards

__all__ = [
    "DEFAULT_GUEST_CID",
    "HEARTBEAT_PORT",
    "Forward",
    "VsockBackend",
    "parse_forward",
    "parse_forwards",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
