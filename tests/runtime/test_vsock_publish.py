"""``--publish``: host connections become vsock streams the back-end opens to the guest, driven
by the stand-in guest's listeners (tests/runtime/vsock_guest.py). Real boots: test_publish_nitro.py.
"""

from __future__ import annotations

import errno
import hashlib
import io
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

import pytest
from vsock_guest import (
    CLOSE_FIRST,
    ECHO,
    GUEST_CID,
    HALF_CLOSE,
    LINUX_RX_SIZE,
    RESET,
    FakeGuest,
    GuestServer,
)

from eifbuild import log
from eifbuild.errors import ToolError, UsageError
from eifbuild.runtime.vsock import VsockBackend, parse_publishes
from eifbuild.runtime.vsock._packet import PARENT_CID, Op
from eifbuild.runtime.vsock.publish import Publish, parse_publish

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

ECHO_PORT, REFUSED_PORT, CLOSE_FIRST_PORT, HALF_CLOSE_PORT, RESET_PORT = 5000, 5001, 5002, 5003, 5004
BEHAVIOURS = {ECHO_PORT: ECHO, CLOSE_FIRST_PORT: CLOSE_FIRST, HALF_CLOSE_PORT: HALF_CLOSE, RESET_PORT: RESET}


def _bytes(seed: int, size: int) -> bytes:
    """``size`` deterministic bytes that differ with ``seed``."""
    return hashlib.shake_256(seed.to_bytes(4, "little")).digest(size)


PAYLOAD = _bytes(26, 1 << 20)  # what close-first and half-close send


# -- the spec -----------------------------------------------------------------------------------------
def test_publish_specs_parse() -> None:
    assert parse_publish("8080:5000") == Publish("127.0.0.1", 8080, 5000)
    assert parse_publish("10.0.0.1:80:5000") == Publish("10.0.0.1", 80, 5000)
    assert parse_publish("[::1]:8080:4294967294") == Publish("::1", 8080, 4294967294)
    assert str(parse_publish("[::1]:8080:5000")) == "[::1]:8080 -> enclave vsock port 5000"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("8080", "'8080': expected [HOSTADDR:]HOSTPORT:ENCLAVEPORT"),
        ("x:5000", "'x:5000': host port 'x' is not a port number (1-65535;"),
        ("8080:0", "'8080:0': enclave port '0' is not a port number"),
        ("70000:5000", "host port '70000' is not a port number (1-65535;"),
        ("localhost:8080:5000", "host address 'localhost' is not an IP address"),
        ("::1:8080:5000", "write an IPv6 host address in brackets, [::1]"),
    ],
)
def test_bad_publish_specs_are_usage_errors(spec: str, error: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_publish(spec)
    assert error in str(err.value)
    assert err.value.key == "--publish"


def test_a_host_address_published_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"'127.0.0.1:80:6': host address 127.0.0.1:80 is published twice"):
        parse_publishes(["80:5", "127.0.0.1:80:6"])


def test_a_host_port_in_use_is_one_error_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        (free,) = _free_ports(1)
        backend = VsockBackend(
            tmp_path / "vsock.sock", publishes=parse_publishes([f"{free}:5000", f"{port}:5001"])
        )
        with pytest.raises(ToolError) as err:
            backend.start()
    assert str(err.value) == (
        f"--publish 127.0.0.1:{port}:5001: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "vsock.sock").exists()
    with socket.create_server(("127.0.0.1", free)):  # the first listener was closed again
        pass


# -- the streams ------------------------------------------------------------------------------------------
def _free_ports(count: int) -> list[int]:
    """``count`` distinct host ports nobody listens on (held together while picked)."""
    probes = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports: list[int] = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


class Published:
    """A back-end publishing a host port for each stand-in guest port, and the guest serving them."""

    def __init__(self, backend: VsockBackend, server: GuestServer, warnings: io.StringIO) -> None:
        self.backend = backend
        self.server = server
        self.warnings = warnings
        self.ports = {p.vsock_port: p.host_port for p in backend.publishes}

    def connect(self, vsock_port: int) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.ports[vsock_port]), timeout=10)


@pytest.fixture
def published(tmp_path: Path) -> Iterator[Published]:
    ports = (ECHO_PORT, REFUSED_PORT, CLOSE_FIRST_PORT, HALF_CLOSE_PORT, RESET_PORT)
    publishes = parse_publishes(
        [f"{host}:{port}" for host, port in zip(_free_ports(len(ports)), ports, strict=True)]
    )
    warnings = io.StringIO()
    with log.use(log.StderrReporter(warnings)):
        backend = VsockBackend(tmp_path / "vsock.sock", publishes=publishes)
        backend.start()
    guest = FakeGuest(backend.socket_path, rx_size=LINUX_RX_SIZE)  # packets are cut to fit
    try:
        with GuestServer(guest, BEHAVIOURS, payload=PAYLOAD) as server:
            yield Published(backend, server, warnings)
    finally:
        guest.close()
        backend.stop()
    assert backend.error is None


def _read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    return bytes(data)


def test_an_accepted_connection_carries_bytes_both_ways(published: Published) -> None:
    with published.connect(ECHO_PORT) as sock:
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
        sock.shutdown(socket.SHUT_WR)
        assert _read_all(sock) == b""
    (request,) = published.server.requests
    assert (request.op, request.src_cid, request.dst_cid, request.dst_port) == (
        Op.REQUEST,
        PARENT_CID,
        GUEST_CID,
        ECHO_PORT,
    )
    assert request.src_port >= 49152
    assert request.buf_alloc > 0
    (conn,) = published.server.conns.values()
    published.server.wait(lambda: conn.reset)  # our SHUTDOWN got the back-end's RST: a clean end
    assert conn.peer_shutdown == 2  # the host's EOF arrived as SHUTDOWN (SEND)
    assert published.warnings.getvalue() == ""


def test_a_refused_connection_is_reset_and_said_on_the_host(published: Published) -> None:
    with pytest.raises(ConnectionResetError), published.connect(REFUSED_PORT) as sock:  # or at connect
        sock.recv(100)
    port = published.ports[REFUSED_PORT]
    line = (
        f"--publish 127.0.0.1:{port} -> enclave vsock port {REFUSED_PORT}: the enclave refused the connection"
    )
    assert published.warnings.getvalue() == f"warning: vsock: {line} (nothing listens there)\n"
    with published.connect(ECHO_PORT) as sock:  # the back-end goes on
        sock.sendall(b"still there")
        assert sock.recv(100) == b"still there"


def test_a_reset_from_the_enclave_resets_the_host_connection_and_is_said(published: Published) -> None:
    with published.connect(RESET_PORT) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    port = published.ports[RESET_PORT]
    line = f"--publish 127.0.0.1:{port} -> enclave vsock port {RESET_PORT}: the enclave reset the connection"
    assert published.warnings.getvalue() == f"warning: vsock: {line}\n"


def test_a_reset_from_the_host_resets_the_vsock_stream_and_is_said(published: Published) -> None:
    with published.connect(ECHO_PORT) as sock:
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    (conn,) = published.server.conns.values()
    published.server.wait(lambda: conn.reset)
    assert conn.shutdown_sent == 0  # no clean end: the back-end's RST came first
    port = published.ports[ECHO_PORT]
    line = f"--publish 127.0.0.1:{port} -> enclave vsock port {ECHO_PORT}: the host side reset the connection"
    assert published.warnings.getvalue() == f"warning: vsock: {line} (Connection reset by peer)\n"


def test_a_port_that_cannot_accept_rests_a_moment_and_says_so(
    published: Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept = socket.socket.accept
    failed: list[bool] = []

    def out_of_fds(sock: socket.socket) -> tuple[socket.socket, object]:
        if not failed:
            failed.append(True)
            raise OSError(errno.EMFILE, "Too many open files")
        return accept(sock)

    monkeypatch.setattr(socket.socket, "accept", out_of_fds)
    start = time.monotonic()
    with published.connect(ECHO_PORT) as sock:
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"  # accepted when the port listens again
    assert time.monotonic() - start >= 0.9
    port = published.ports[ECHO_PORT]
    line = f"--publish 127.0.0.1:{port} -> enclave vsock port {ECHO_PORT}: cannot accept: Too many open files"
    assert published.warnings.getvalue() == f"warning: vsock: {line}\n"


def _echo(published: Published, data: bytes) -> bytes:
    with published.connect(ECHO_PORT) as sock:

        def send() -> None:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # half-close from the host: the echo still comes back

        sender = threading.Thread(target=send)
        sender.start()
        got = _read_all(sock)
        sender.join(10)
    return got


def test_mebibytes_go_both_ways_through_the_credit_windows(published: Published) -> None:
    data = _bytes(4, 4 << 20)  # 64 x the guest's window, 16 x the back-end's
    start = time.monotonic()
    assert _echo(published, data) == data
    seconds = time.monotonic() - start
    # The guest gave its credit back as it read (the back-end's rides on its RW packets); the
    # stand-in fails on any byte over its window.
    assert published.server.credit_updates["sent"] >= 50
    print(f"4 MiB echoed in {seconds:.2f} s")


def test_the_guest_half_closes_and_still_reads(published: Published) -> None:
    upload = _bytes(5, 300 << 10)
    with published.connect(HALF_CLOSE_PORT) as sock:
        assert _read_all(sock) == PAYLOAD  # the guest's SHUTDOWN (SEND): EOF on the host
        sock.sendall(upload)  # the other direction still flows
        sock.shutdown(socket.SHUT_WR)
        (conn,) = published.server.conns.values()
        published.server.wait(lambda: conn.reset)
    assert conn.received == upload
    assert published.warnings.getvalue() == ""


def test_the_enclave_closing_first_without_reading_still_delivers_what_it_sent(published: Published) -> None:
    upload = bytes(2 << 20)  # more than the guest will ever read
    errors: list[OSError] = []
    with published.connect(CLOSE_FIRST_PORT) as sock:

        def send() -> None:
            try:
                sock.sendall(upload)
            except OSError as exc:
                errors.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.3)  # a slow reader: the guest closes while the host has not read its bytes
        assert _read_all(sock) == PAYLOAD
        sender.join(10)
    assert errors == []  # the host's bytes after the guest closed are dropped, not answered by a RST
    (conn,) = published.server.conns.values()
    assert conn.reset
    assert len(conn.received) <= conn.buf_alloc  # it never read, so the back-end stopped at its credit
    assert published.warnings.getvalue() == ""


def test_two_dozen_connections_at_once(published: Published) -> None:
    count, size = 24, 200 << 10
    results: dict[int, bytes] = {}

    def client(index: int) -> None:
        results[index] = _echo(published, _bytes(index, size))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    seconds = time.monotonic() - start
    assert sorted(results) == list(range(count))
    for index, got in results.items():
        assert got == _bytes(index, size), index
    assert len({r.src_port for r in published.server.requests}) == count  # a fresh parent port each
    published.server.wait(lambda: all(c.reset for c in published.server.conns.values()))
    assert published.warnings.getvalue() == ""
    print(f"{count} x {size >> 10} KiB echoed at once in {seconds:.2f} s")
