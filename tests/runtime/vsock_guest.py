"""A stand-in for QEMU and the guest's virtio-vsock driver, to drive eifbuild's back-end in tests.

It speaks vhost-user on the back-end's socket (features, a memfd as guest memory, two split rings,
kick and call eventfds) and puts virtio-vsock packets on the tx ring / takes them off the rx ring,
as the guest kernel would.
"""

from __future__ import annotations

import array
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eifbuild.runtime.vsock import _packet as packet
from eifbuild.runtime.vsock import _vhost_user as vhost_user

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MEMORY = 1 << 20
USER_BASE = 0x7F00_0000_0000  # where "QEMU" has the memory mapped: the ring addresses use this
NUM = 64
RINGS = {0: (0x0000, 0x1000, 0x2000), 1: (0x3000, 0x4000, 0x5000)}  # desc, avail, used
BUFFERS = {0: 0x10000, 1: 0x60000}  # NUM buffers of BUF_SIZE each
BUF_SIZE = 4096
LINUX_RX_SIZE = 4096 - 320  # what Linux 6.12 posts: a page less the skb's overhead
GUEST_CID = 16


class FakeGuest:
    def __init__(self, socket_path: Path, *, rx_size: int = BUF_SIZE) -> None:
        self.rx_size = rx_size  # the size of the rx buffers it posts
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(socket_path))
        self.fd = os.memfd_create("guest")
        os.ftruncate(self.fd, MEMORY)
        self.kick = {i: os.eventfd(0, os.EFD_NONBLOCK) for i in RINGS}
        self.call = {i: os.eventfd(0, os.EFD_NONBLOCK) for i in RINGS}
        self.avail_idx = {0: 0, 1: 0}
        self.used_seen = {0: 0, 1: 0}

    # -- vhost-user ---------------------------------------------------------------------------------
    def send(self, request: int, payload: bytes = b"", fds: tuple[int, ...] = ()) -> None:
        data = struct.pack("<III", request, vhost_user.FLAG_VERSION, len(payload)) + payload
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], ancillary)

    def ask(self, request: int, payload: bytes = b"") -> bytes:
        self.send(request, payload)
        header = self.sock.recv(12, socket.MSG_WAITALL)
        got, flags, size = struct.unpack("<III", header)
        assert (got, flags) == (request, vhost_user.FLAG_VERSION | vhost_user.FLAG_REPLY)
        return self.sock.recv(size, socket.MSG_WAITALL) if size else b""

    def handshake(self) -> dict[str, int]:
        r = vhost_user.Request
        found = {
            "features": struct.unpack("<Q", self.ask(r.GET_FEATURES))[0],
            "protocol": struct.unpack("<Q", self.ask(r.GET_PROTOCOL_FEATURES))[0],
        }
        self.send(r.SET_FEATURES, struct.pack("<Q", vhost_user.BACKEND_FEATURES))
        self.send(r.SET_PROTOCOL_FEATURES, struct.pack("<Q", vhost_user.PROTOCOL_F_CONFIG))
        self.send(r.SET_OWNER)
        config = self.ask(r.GET_CONFIG, struct.pack("<III", 0, 8, 0) + bytes(8))
        found["cid"] = struct.unpack_from("<Q", config, 12)[0]
        table = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, MEMORY, USER_BASE, 0)
        self.send(r.SET_MEM_TABLE, table, (self.fd,))
        for index, (desc, avail, used) in RINGS.items():
            self.send(r.SET_VRING_NUM, struct.pack("<II", index, NUM))
            addrs = struct.pack("<IIQQQQ", index, 0, USER_BASE + desc, USER_BASE + used, USER_BASE + avail, 0)
            self.send(r.SET_VRING_ADDR, addrs)
            self.send(r.SET_VRING_BASE, struct.pack("<II", index, 0))
            self.send(r.SET_VRING_KICK, struct.pack("<Q", index), (self.kick[index],))
            self.send(r.SET_VRING_CALL, struct.pack("<Q", index), (self.call[index],))
            self.send(r.SET_VRING_ENABLE, struct.pack("<II", index, 1))
        return found

    # -- rings --------------------------------------------------------------------------------------
    def _offer(self, index: int, slot: int, length: int, flags: int) -> None:
        desc, avail, _used = RINGS[index]
        addr = BUFFERS[index] + slot * BUF_SIZE
        os.pwrite(self.fd, struct.pack("<QIHH", addr, length, flags, 0), desc + 16 * slot)
        os.pwrite(self.fd, struct.pack("<H", slot), avail + 4 + 2 * (self.avail_idx[index] % NUM))
        self.avail_idx[index] = (self.avail_idx[index] + 1) & 0xFFFF
        os.pwrite(self.fd, struct.pack("<H", self.avail_idx[index]), avail + 2)
        os.eventfd_write(self.kick[index], 1)

    def post_rx_buffers(self, count: int = NUM) -> None:
        for slot in range(count):
            self._offer(0, slot, self.rx_size, vhost_user.DESC_F_WRITE)

    def send_packet(self, pkt: packet.Packet) -> None:
        """Put ``pkt`` on the tx ring, once the back-end gave back the slot it goes in."""
        _desc, _avail, used = RINGS[1]
        deadline = time.monotonic() + 5
        while (self.avail_idx[1] - struct.unpack("<H", os.pread(self.fd, 2, used + 2))[0]) & 0xFFFF >= NUM:
            if time.monotonic() > deadline:
                msg = "the back-end took nothing from the tx ring for 5 s"
                raise TimeoutError(msg)
            time.sleep(0.0005)
        slot = self.avail_idx[1] % NUM
        data = pkt.encode()
        os.pwrite(self.fd, data, BUFFERS[1] + slot * BUF_SIZE)
        self._offer(1, slot, len(data), 0)

    def receive(self, timeout: float = 5.0) -> list[packet.Packet]:
        """Packets the back-end put on the rx ring (their buffers are offered again)."""
        ready, _, _ = select.select([self.call[0]], [], [], timeout)
        if not ready:
            return []
        os.eventfd_read(self.call[0])
        _desc, _avail, used = RINGS[0]
        (idx,) = struct.unpack("<H", os.pread(self.fd, 2, used + 2))
        found = []
        while self.used_seen[0] != idx:
            slot, length = struct.unpack(
                "<II", os.pread(self.fd, 8, used + 4 + 8 * (self.used_seen[0] % NUM))
            )
            found.append(packet.decode(os.pread(self.fd, length, BUFFERS[0] + slot * BUF_SIZE)))
            self.used_seen[0] = (self.used_seen[0] + 1) & 0xFFFF
            self._offer(0, slot, self.rx_size, vhost_user.DESC_F_WRITE)
        return found

    def close(self) -> None:
        self.sock.close()
        for fd in (self.fd, *self.kick.values(), *self.call.values()):
            os.close(fd)


def guest_packet(
    op: int, dst_port: int, *, src_port: int = 1234, payload: bytes = b"", flags: int = 0
) -> packet.Packet:
    return packet.Packet(
        GUEST_CID, packet.PARENT_CID, src_port, dst_port, op, flags=flags, buf_alloc=1 << 18, payload=payload
    )


# -- the guest's side of published ports ------------------------------------------------------------
ECHO, CLOSE_FIRST, HALF_CLOSE, RESET = "echo", "close-first", "half-close", "reset"  # others: refused
_BOTH = packet.SHUTDOWN_RCV | packet.SHUTDOWN_SEND
_ROUND = 16  # packets one connection may send before the others (and the rx ring) get a turn


@dataclass(eq=False)
class GuestConn:
    """One connection the guest accepted, as its vsock stack would keep it."""

    port: int  # the guest's (the listener's)
    peer_port: int  # the parent's, picked by the back-end
    behaviour: str
    buf_alloc: int
    received: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    fwd_cnt: int = 0  # bytes consumed ("read by the app")
    reported: int = 0
    sent: int = 0
    peer_buf_alloc: int = 0
    peer_fwd_cnt: int = 0
    peer_shutdown: int = 0
    shutdown_when_sent: int = 0  # SHUTDOWN flags to send once ``out`` is empty
    shutdown_sent: int = 0
    reset: bool = False  # the back-end sent RST (after our close: the clean end)

    @property
    def credit(self) -> int:
        return self.peer_buf_alloc - (self.sent - self.peer_fwd_cnt)

    def packet(self, op: int, *, flags: int = 0, payload: bytes = b"") -> packet.Packet:
        self.reported = self.fwd_cnt
        return packet.Packet(
            GUEST_CID,
            packet.PARENT_CID,
            self.port,
            self.peer_port,
            op,
            flags=flags,
            buf_alloc=self.buf_alloc,
            fwd_cnt=self.fwd_cnt,
            payload=payload,
        )


class GuestServer:
    """Listeners in the stand-in guest, in a thread: the back-end's REQUESTs to a port in
    ``behaviours`` are accepted, others refused (RST, as the kernel does with no listener).

    - ``echo``: sends back what it reads; at the host's EOF, sends the rest and closes;
    - ``close-first``: sends ``payload`` and closes, reading nothing (so giving no credit back);
    - ``half-close``: sends ``payload``, shuts down sending, reads until the host's EOF, closes;
    - ``reset``: resets the connection (RST) when the first bytes arrive.

    ``errors`` collects what went wrong in the thread (a credit overrun included)."""

    def __init__(
        self, guest: FakeGuest, behaviours: dict[int, str], *, payload: bytes = b"", buf_alloc: int = 64 << 10
    ) -> None:
        self.guest = guest
        self.behaviours = behaviours
        self.payload = payload
        self.buf_alloc = buf_alloc
        self.requests: list[packet.Packet] = []
        self.conns: dict[tuple[int, int], GuestConn] = {}
        self.credit_updates = {"sent": 0, "received": 0}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GuestServer:
        self.guest.handshake()
        self.guest.post_rx_buffers()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        assert not self.errors, self.errors

    def wait(self, done: Callable[[], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, "the stand-in guest waited in vain"
            time.sleep(0.01)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for pkt in self.guest.receive(0.01):
                    self._handle(pkt)
                self._pump()
        except BaseException as exc:  # reported by __exit__ and wait()
            self.errors.append(exc)

    def _handle(self, pkt: packet.Packet) -> None:
        if pkt.op == packet.Op.REQUEST:
            self._accept(pkt)
            return
        conn = self.conns.get((pkt.dst_port, pkt.src_port))
        if conn is None or conn.reset:
            if pkt.op != packet.Op.RST:
                self.guest.send_packet(pkt.reply(packet.Op.RST))
            return
        conn.peer_buf_alloc, conn.peer_fwd_cnt = pkt.buf_alloc, pkt.fwd_cnt
        if pkt.op == packet.Op.RW:
            self._read(conn, pkt.payload)
        elif pkt.op == packet.Op.SHUTDOWN:
            conn.peer_shutdown |= pkt.flags
            if pkt.flags & packet.SHUTDOWN_SEND and conn.behaviour in (ECHO, HALF_CLOSE):
                conn.shutdown_when_sent = _BOTH  # the host's EOF: finish, then close
        elif pkt.op == packet.Op.RST:
            conn.reset = True
        elif pkt.op == packet.Op.CREDIT_UPDATE:
            self.credit_updates["received"] += 1
        elif pkt.op == packet.Op.CREDIT_REQUEST:
            self.guest.send_packet(conn.packet(packet.Op.CREDIT_UPDATE))

    def _accept(self, request: packet.Packet) -> None:
        self.requests.append(request)
        behaviour = self.behaviours.get(request.dst_port)
        if behaviour is None:
            self.guest.send_packet(request.reply(packet.Op.RST))
            return
        conn = GuestConn(request.dst_port, request.src_port, behaviour, self.buf_alloc)
        conn.peer_buf_alloc, conn.peer_fwd_cnt = request.buf_alloc, request.fwd_cnt
        if behaviour in (CLOSE_FIRST, HALF_CLOSE):
            conn.out += self.payload
            conn.shutdown_when_sent = _BOTH if behaviour == CLOSE_FIRST else packet.SHUTDOWN_SEND
        self.conns[conn.port, conn.peer_port] = conn
        self.guest.send_packet(conn.packet(packet.Op.RESPONSE))

    def _read(self, conn: GuestConn, data: bytes) -> None:
        conn.received += data
        if conn.behaviour == RESET:
            conn.reset = True
            self.guest.send_packet(conn.packet(packet.Op.RST))
            return
        if len(conn.received) - conn.fwd_cnt > conn.buf_alloc:
            msg = f"the back-end sent {len(conn.received) - conn.fwd_cnt} bytes, over our {conn.buf_alloc}"
            raise AssertionError(msg)
        if conn.behaviour == CLOSE_FIRST:
            return  # the app reads nothing: no credit given back
        conn.fwd_cnt += len(data)
        if conn.behaviour == ECHO:
            conn.out += data
        if conn.fwd_cnt - conn.reported >= conn.buf_alloc // 4:
            self.credit_updates["sent"] += 1
            self.guest.send_packet(conn.packet(packet.Op.CREDIT_UPDATE))

    def _pump(self) -> None:
        for conn in list(self.conns.values()):
            for _ in range(_ROUND):
                size = min(len(conn.out), conn.credit, BUF_SIZE - packet.HEADER.size)
                if conn.reset or size <= 0:
                    break
                chunk = bytes(conn.out[:size])
                del conn.out[:size]
                self.guest.send_packet(conn.packet(packet.Op.RW, payload=chunk))
                conn.sent += size
            wanted = conn.shutdown_when_sent
            if not conn.out and not conn.reset and wanted and conn.shutdown_sent != wanted:
                conn.shutdown_sent = wanted
                self.guest.send_packet(conn.packet(packet.Op.SHUTDOWN, flags=wanted))
