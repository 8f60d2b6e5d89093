"""The vhost-user-vsock back-end without QEMU: message and packet codecs, forward specs, and the
select loop driven by a stand-in front-end and guest driver (tests/runtime/vsock_guest.py).

Real boots on QEMU's nitro-enclave machine are in ``test_boot_nitro.py``.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

import pytest
from vsock_guest import GUEST_CID, LINUX_RX_SIZE, FakeGuest, guest_packet

from eifbuild import log
from eifbuild.errors import ToolError, UsageError
from eifbuild.runtime.vsock import VsockBackend, parse_forwards
from eifbuild.runtime.vsock import _packet as packet
from eifbuild.runtime.vsock import _vhost_user as vhost_user
from eifbuild.runtime.vsock._packet import Op
from eifbuild.runtime.vsock.forward import Forward, parse_forward

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


# -- vhost-user messages ------------------------------------------------------------------------------
def test_a_reply_has_the_version_and_reply_flags() -> None:
    data = vhost_user.encode(vhost_user.Request.GET_FEATURES, struct.pack("<Q", 7))
    assert data == struct.pack("<IIIQ", 1, 0x1 | 0x4, 8, 7)
    assert vhost_user.decode_header(data[:12]) == (1, 0x5, 8)


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (struct.pack("<III", 1, 0x2, 0), "vhost-user message version 2, expected 1"),
        (struct.pack("<III", 5, 0x1, 1 << 20), "vhost-user payload of 1048576 bytes (request 5)"),
        (b"short", "vhost-user header of 5 bytes, expected 12"),
    ],
)
def test_bad_headers_are_protocol_errors(header: bytes, error: str) -> None:
    with pytest.raises(vhost_user.ProtocolError, match=error.replace("(", r"\(").replace(")", r"\)")):
        vhost_user.decode_header(header)


def test_payloads_decode() -> None:
    assert vhost_user.decode_vring_state(struct.pack("<II", 1, 128)) == (1, 128)
    addr = vhost_user.decode_vring_addr(struct.pack("<IIQQQQ", 1, 0, 0x1000, 0x3000, 0x2000, 0))
    assert (addr.index, addr.desc, addr.used, addr.avail) == (1, 0x1000, 0x3000, 0x2000)
    assert vhost_user.decode_vring_fd(struct.pack("<Q", 1)) == (1, True)
    assert vhost_user.decode_vring_fd(struct.pack("<Q", 0x100)) == (0, False)
    table = struct.pack("<II", 2, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7F00, 0)
    table += struct.pack("<QQQQ", 1 << 32, 4096, 0x9F00, 8192)
    assert vhost_user.decode_mem_table(table) == [
        vhost_user.Region(0, 1 << 20, 0x7F00, 0),
        vhost_user.Region(1 << 32, 4096, 0x9F00, 8192),
    ]
    assert vhost_user.decode_config_request(struct.pack("<III", 0, 8, 0) + bytes(8)) == (0, 8)
    assert vhost_user.encode_config(0, b"\x10" + bytes(7)) == struct.pack("<IIIQ", 0, 8, 0, 16)


def test_a_short_payload_or_table_is_a_protocol_error() -> None:
    with pytest.raises(vhost_user.ProtocolError, match="vring state: payload of 4 bytes, expected 8"):
        vhost_user.decode_vring_state(b"\0" * 4)
    with pytest.raises(vhost_user.ProtocolError, match="memory table of 3 regions in 40 bytes"):
        vhost_user.decode_mem_table(struct.pack("<II", 3, 0) + bytes(32))


# -- virtio-vsock packets -----------------------------------------------------------------------------
def test_a_packet_round_trips_and_its_header_is_44_bytes() -> None:
    pkt = packet.Packet(16, 3, 1234, 9000, Op.RW, flags=0, buf_alloc=4096, fwd_cnt=7, payload=b"\xb7")
    data = pkt.encode()
    assert len(data) == 45
    assert data[:44] == struct.pack("<QQIIIHHIII", 16, 3, 1234, 9000, 1, 1, 5, 0, 4096, 7)
    assert packet.decode(data) == pkt


def test_a_reply_swaps_the_addresses() -> None:
    pkt = guest_packet(Op.REQUEST, 9000)
    rst = pkt.reply(Op.RST)
    assert (rst.src_cid, rst.dst_cid, rst.src_port, rst.dst_port, rst.op) == (
        3,
        GUEST_CID,
        9000,
        1234,
        Op.RST,
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\0" * 10, "virtio-vsock packet of 10 bytes, shorter than its 44-byte header"),
        (struct.pack("<QQIIIHHIII", 16, 3, 1, 2, 5, 1, 5, 0, 0, 0) + b"ab", "says 5 payload bytes, has 2"),
    ],
)
def test_bad_packets_are_errors(data: bytes, error: str) -> None:
    with pytest.raises(packet.PacketError, match=error):
        packet.decode(data)


# -- --vsock-forward ----------------------------------------------------------------------------------
def test_forward_specs_parse() -> None:
    assert parse_forward("5000=tcp:127.0.0.1:8080") == Forward(5000, "tcp", "127.0.0.1:8080")
    assert parse_forward("7=unix:/run/app.sock") == Forward(7, "unix", "/run/app.sock")
    assert str(parse_forward("5000=tcp:[::1]:80")) == "vsock port 5000 -> tcp:[::1]:80"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("5000", "'5000': expected PORT=tcp:HOST:PORT or PORT=unix:PATH"),
        ("5000=udp:h:1", "'5000=udp:h:1': expected PORT=tcp:HOST:PORT or PORT=unix:PATH"),
        ("x=tcp:h:1", "'x=tcp:h:1': vsock port 'x' is not a port number"),
        ("5000=tcp:h", "'5000=tcp:h': expected PORT=tcp:HOST:PORT"),
        ("5000=tcp:h:99999", "'5000=tcp:h:99999': TCP port 99999 is over 65535"),
        ("9000=tcp:h:1", "vsock port 9000 is the enclave heartbeat's, answered by eifbuild itself"),
    ],
)
def test_bad_forward_specs_are_usage_errors(spec: str, error: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_forward(spec)
    assert error in str(err.value)
    assert err.value.key == "--vsock-forward"


def test_a_port_forwarded_twice_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="vsock port 5 is forwarded twice"):
        parse_forwards(["5=unix:/a", "5=unix:/b"])


# -- the back-end's loop ------------------------------------------------------------------------------
@pytest.fixture
def backend(tmp_path: Path) -> Iterator[VsockBackend]:
    found = VsockBackend(tmp_path / "vsock.sock")
    found.start()
    yield found
    found.stop()


@pytest.fixture
def guest(backend: VsockBackend) -> Iterator[FakeGuest]:
    driver = FakeGuest(backend.socket_path)
    yield driver
    driver.close()


def _receive(guest: FakeGuest, count: int) -> list[packet.Packet]:
    found: list[packet.Packet] = []
    deadline = time.monotonic() + 5
    while len(found) < count and time.monotonic() < deadline:
        found += guest.receive(deadline - time.monotonic())
    return found


def test_the_handshake_offers_version_1_and_config_and_gives_the_cid(
    backend: VsockBackend, guest: FakeGuest
) -> None:
    found = guest.handshake()
    assert found == {"features": (1 << 32) | (1 << 30), "protocol": 1 << 9, "cid": 16}
    assert backend.error is None


def test_the_heartbeat_is_answered(backend: VsockBackend, guest: FakeGuest) -> None:
    guest.handshake()
    guest.post_rx_buffers()
    guest.send_packet(guest_packet(Op.REQUEST, 9000))
    (response,) = _receive(guest, 1)
    assert (response.op, response.src_port, response.dst_port, response.dst_cid) == (
        Op.RESPONSE,
        9000,
        1234,
        16,
    )
    assert response.buf_alloc > 0
    guest.send_packet(guest_packet(Op.RW, 9000, payload=b"\xb7"))
    (echo,) = _receive(guest, 1)
    assert (echo.op, echo.payload) == (Op.RW, b"\xb7")
    guest.send_packet(guest_packet(Op.SHUTDOWN, 9000, flags=3))
    (rst,) = _receive(guest, 1)
    assert rst.op == Op.RST
    assert backend.heartbeats == 1
    assert backend.error is None


def test_a_connection_to_a_port_not_forwarded_is_reset(backend: VsockBackend, guest: FakeGuest) -> None:
    guest.handshake()
    guest.post_rx_buffers()
    guest.send_packet(guest_packet(Op.REQUEST, 5000))
    (rst,) = _receive(guest, 1)
    assert (rst.op, rst.src_port) == (Op.RST, 5000)
    assert "refused a connection to port 5000 (not forwarded)" in backend.events


def test_a_forwarded_connection_reaches_a_tcp_server_and_back(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = conn.recv(100)
            conn.sendall(b"pong:" + data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    backend = VsockBackend(tmp_path / "vsock.sock", forwards=parse_forwards([f"5000=tcp:127.0.0.1:{port}"]))
    backend.start()
    guest = FakeGuest(backend.socket_path)
    try:
        guest.handshake()
        guest.post_rx_buffers()
        guest.send_packet(guest_packet(Op.REQUEST, 5000))
        assert _receive(guest, 1)[0].op == Op.RESPONSE
        guest.send_packet(guest_packet(Op.RW, 5000, payload=b"ping"))
        got = _receive(guest, 2)
        assert [(p.op, p.payload) for p in got] == [(Op.RW, b"pong:ping"), (Op.SHUTDOWN, b"")]
        assert got[1].flags == packet.SHUTDOWN_SEND
        thread.join(5)
    finally:
        guest.close()
        backend.stop()
        server.close()
    assert backend.error is None


def test_a_packet_too_long_for_the_guest_s_rx_buffer_is_cut(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    data = bytes(range(256)) * 15 + bytes(range(212))  # 4052 bytes: a one-page rx buffer's payload

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(data)
            conn.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    forwards = parse_forwards([f"5000=tcp:127.0.0.1:{server.getsockname()[1]}"])
    backend = VsockBackend(tmp_path / "vsock.sock", forwards=forwards)
    backend.start()
    guest = FakeGuest(backend.socket_path)
    try:
        guest.handshake()
        guest.post_rx_buffers(1)  # one page: the back-end reads the host 4052 bytes at a time
        guest.send_packet(guest_packet(Op.REQUEST, 5000))
        guest.rx_size = LINUX_RX_SIZE  # then smaller buffers, as Linux posts them
        assert _receive(guest, 1)[0].op == Op.RESPONSE
        got = _receive(guest, 2)
        assert [(p.op, len(p.payload)) for p in got] == [(Op.RW, LINUX_RX_SIZE - 44), (Op.RW, 320)]
        assert b"".join(p.payload for p in got) == data
    finally:
        guest.close()
        backend.stop()
        server.close()
    assert backend.error is None


def test_a_forward_whose_target_is_down_resets_and_says_why(tmp_path: Path) -> None:
    forwards = parse_forwards([f"5000=unix:{tmp_path / 'nobody-listens'}"])
    backend = VsockBackend(tmp_path / "vsock.sock", forwards=forwards)
    said = io.StringIO()
    with log.use(log.StderrReporter(said)):  # the back-end's thread reports where it was started
        backend.start()
    guest = FakeGuest(backend.socket_path)
    try:
        guest.handshake()
        guest.post_rx_buffers()
        guest.send_packet(guest_packet(Op.REQUEST, 5000))
        assert _receive(guest, 1)[0].op == Op.RST
    finally:
        guest.close()
        backend.stop()
    line = f"vsock port 5000 -> unix:{tmp_path / 'nobody-listens'}: cannot connect: No such file or directory"
    assert said.getvalue() == f"warning: vsock: {line} (the enclave's connection was reset)\n"


def test_a_protocol_error_stops_the_back_end_with_one_line(backend: VsockBackend, guest: FakeGuest) -> None:
    guest.send(vhost_user.Request.SET_VRING_NUM, struct.pack("<II", 5, 8))
    deadline = time.monotonic() + 5
    while backend.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.error == "vsock back-end: queue 5: a vsock device has queues 0 (rx) and 1 (tx)"


def test_a_socket_that_cannot_be_bound_is_a_tool_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "vsock.sock"
    with pytest.raises(ToolError, match=r"vsock back-end: cannot listen on .*: No such file or directory"):
        VsockBackend(path).start()
