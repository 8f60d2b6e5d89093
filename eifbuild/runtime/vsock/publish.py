"""``--publish [HOSTADDR:]HOSTPORT:ENCLAVEPORT`` (the form of ``docker run -p``): a host TCP port
whose connections become vsock streams to the enclave's port, opened by the back-end (the host
connects, the enclave accepts). HOSTADDR defaults to 127.0.0.1; an IPv6 one is bracketed."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Final

from ...errors import ToolError, UsageError

DEFAULT_HOST: Final = "127.0.0.1"
BACKLOG: Final = 128
_FORM: Final = "expected [HOSTADDR:]HOSTPORT:ENCLAVEPORT, e.g. 8080:5000 or 127.0.0.1:8080:5000"


@dataclass(frozen=True)
class Publish:
    host: str  # an IP address, without brackets
    host_port: int
    vsock_port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.host_port}"

    def __str__(self) -> str:
        return f"{self.address} -> enclave vsock port {self.vsock_port}"

    def listen(self) -> socket.socket:
        """A non-blocking listening socket on HOSTADDR:HOSTPORT; a port in use is one ToolError line."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.host_port))
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            msg = f"--publish {self.address}:{self.vsock_port}: cannot listen on {self.address}: "
            raise ToolError(msg + (exc.strerror or str(exc))) from None
        sock.setblocking(False)
        return sock


def _port(text: str, what: str, spec: str, top: int) -> int:
    if not text.isdigit() or not 0 < int(text) <= top:
        msg = f"{spec!r}: {what} {text!r} is not a port number (1-{top}; {_FORM})"
        raise UsageError(msg, key="--publish")
    return int(text)


def parse_publish(spec: str) -> Publish:
    """``HOSTPORT:ENCLAVEPORT`` or ``HOSTADDR:HOSTPORT:ENCLAVEPORT`` (``[::1]:8080:5000``)."""
    rest, colon, vsock_text = spec.rpartition(":")
    if not colon or not rest:
        msg = f"{spec!r}: {_FORM}"
        raise UsageError(msg, key="--publish")
    host, colon, port_text = rest.rpartition(":")
    if not colon:
        host, port_text = DEFAULT_HOST, rest
    host_port = _port(port_text, "host port", spec, 0xFFFF)
    vsock_port = _port(vsock_text, "enclave port", spec, 0xFFFFFFFE)
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        msg = f"{spec!r}: host address {host!r} is not an IP address ({_FORM})"
        raise UsageError(msg, key="--publish") from None
    if ip.version == 6 and bare == host:
        msg = f"{spec!r}: write an IPv6 host address in brackets, [{host}]"
        raise UsageError(msg, key="--publish")
    return Publish(str(ip), host_port, vsock_port)


def parse_publishes(specs: list[str]) -> tuple[Publish, ...]:
    found: dict[tuple[str, int], Publish] = {}
    for spec in specs:
        publish = parse_publish(spec)
        if (publish.host, publish.host_port) in found:
            msg = f"{spec!r}: host address {publish.address} is published twice"
            raise UsageError(msg, key="--publish")
        found[publish.host, publish.host_port] = publish
    return tuple(found.values())
