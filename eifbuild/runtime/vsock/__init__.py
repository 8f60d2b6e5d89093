"""vsock for QEMU's nitro-enclave machine: a vhost-user-vsock back-end that answers the enclave
heartbeat, forwards the guest's connections to host sockets and the host's connections on
published ports to the guest."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...util.lazy import lazy_face

if TYPE_CHECKING:
    from .backend import VsockBackend
    from .forward import HEARTBEAT_PORT, parse_forwards
    from .publish import parse_publishes

EXPORTS = {
    "VsockBackend": ".backend",
    "HEARTBEAT_PORT": ".forward",
    "parse_forwards": ".forward",
    "parse_publishes": ".publish",
}

__all__ = ["HEARTBEAT_PORT", "VsockBackend", "parse_forwards", "parse_publishes"]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
