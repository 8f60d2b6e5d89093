"""``--vsock-forward PORT=tcp:HOST:PORT`` / ``PORT=unix:PATH``: where a guest's connection to the
parent (CID 3) on a vsock port goes on the host."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Final

from ...errors import UsageError

HEARTBEAT_PORT: Final = 9000
CONNECT_TIMEOUT: Final = 5.0
_FORM: Final = "expected PORT=tcp:HOST:PORT or PORT=unix:PATH"


@dataclass(frozen=True)
class Forward:
    vsock_port: int
    kind: str  # "tcp" or "unix"
    address: str  # "HOST:PORT" or a path

    def __str__(self) -> str:
        return f"vsock port {self.vsock_port} -> {self.kind}:{self.address}"

    def connect(self) -> socket.socket:
        """A connected host socket (blocking connect with a timeout, then non-blocking)."""
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: str | tuple[str, int] = self.address
        else:
            host, _, port = self.address.rpartition(":")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(target)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock


def _port(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 1 << 32:
        msg = f"{spec!r}: {what} {text!r} is not a port number ({_FORM})"
        raise UsageError(msg, key="--vsock-forward")
    return int(text)


def parse_forward(spec: str) -> Forward:
    """``PORT=tcp:HOST:PORT`` or ``PORT=unix:PATH``; port 9000 is the heartbeat's own."""
    port_text, eq, target = spec.partition("=")
    kind, colon, address = target.partition(":")
    if not eq or not colon or kind not in {"tcp", "unix"} or not address:
        msg = f"{spec!r}: {_FORM}"
        raise UsageError(msg, key="--vsock-forward")
    vsock_port = _port(port_text, "vsock port", spec)
    if vsock_port == HEARTBEAT_PORT:
        msg = f"{spec!r}: vsock port {HEARTBEAT_PORT} is the enclave heartbeat's, answered by eifbuild itself"
        raise UsageError(msg, key="--vsock-forward")
    if kind == "tcp":
        host, colon, tcp_port = address.rpartition(":")
        if not colon or not host:
            msg = f"{spec!r}: {_FORM}"
            raise UsageError(msg, key="--vsock-forward")
        if _port(tcp_port, "TCP port", spec) > 0xFFFF:
            msg = f"{spec!r}: TCP port {tcp_port} is over 65535"
            raise UsageError(msg, key="--vsock-forward")
    return Forward(vsock_port, kind, address)


def parse_forwards(specs: list[str]) -> dict[int, Forward]:
    found: dict[int, Forward] = {}
    for spec in specs:
        forward = parse_forward(spec)
        if forward.vsock_port in found:
            msg = f"{spec!r}: vsock port {forward.vsock_port} is forwarded twice"
            raise UsageError(msg, key="--vsock-forward")
        found[forward.vsock_port] = forward
    return found
