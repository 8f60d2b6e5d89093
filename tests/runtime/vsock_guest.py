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
from typing import TYPE_CHECKING

from eifbuild.runtime.vsock import _packet as packet
from eifbuild.runtime.vsock import _vhost_user as vhost_user

if TYPE_CHECKING:
    from pathlib import Path

MEMORY = 1 << 20
USER_BASE = 0x7F00_0000_0000  # where "QEMU" has the memory mapped: the ring addresses use this
NUM = 8
RINGS = {0: (0x0000, 0x1000, 0x2000), 1: (0x3000, 0x4000, 0x5000)}  # desc, avail, used
BUFFERS = {0: 0x10000, 1: 0x20000}
BUF_SIZE = 4096
GUEST_CID = 16


class FakeGuest:
    def __init__(self, socket_path: Path) -> None:
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

    def post_rx_buffers(self) -> None:
        for slot in range(NUM):
            self._offer(0, slot, BUF_SIZE, vhost_user.DESC_F_WRITE)

    def send_packet(self, pkt: packet.Packet) -> None:
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
            self._offer(0, slot, BUF_SIZE, vhost_user.DESC_F_WRITE)
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
