"""The vhost-user protocol as a vsock back-end needs it (QEMU's docs/interop/vhost-user.rst).

Messages are a 12-byte header (request, flags, payload size, all le32) and a payload; file
descriptors (guest memory, kick and call eventfds) travel beside them as SCM_RIGHTS. Guest memory
arrives as regions to mmap; the split virtqueues live in that memory. Only what QEMU's
vhost-user-vsock device uses is here: no packed rings, no event index, no indirect descriptors
(none of them is offered, so the driver cannot use them).
"""

from __future__ import annotations

import array
import mmap
import os
import socket
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from ...errors import ToolError

HEADER: Final = struct.Struct("<III")
FLAG_VERSION: Final = 0x1
FLAG_REPLY: Final = 1 << 2
VIRTIO_F_VERSION_1: Final = 1 << 32
F_PROTOCOL_FEATURES: Final = 1 << 30
PROTOCOL_F_CONFIG: Final = 1 << 9
BACKEND_FEATURES: Final = VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES
BACKEND_PROTOCOL_FEATURES: Final = PROTOCOL_F_CONFIG
MAX_PAYLOAD: Final = 4096
MAX_FDS: Final = 8
VRING_NOFD: Final = 1 << 8
_U64: Final = struct.Struct("<Q")
_VRING_STATE: Final = struct.Struct("<II")
_VRING_ADDR: Final = struct.Struct("<IIQQQQ")
_REGION: Final = struct.Struct("<QQQQ")
_CONFIG: Final = struct.Struct("<III")
_DESC: Final = struct.Struct("<QIHH")
_U16: Final = struct.Struct("<H")
_USED: Final = struct.Struct("<II")
DESC_F_NEXT: Final = 1
DESC_F_WRITE: Final = 2


class Request(IntEnum):
    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4
    SET_MEM_TABLE = 5
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    SET_VRING_ENABLE = 18
    GET_CONFIG = 24


class ProtocolError(ToolError):
    """The front-end (QEMU) sent something this back-end cannot follow."""


@dataclass(frozen=True)
class Message:
    request: int
    flags: int
    payload: bytes
    fds: tuple[int, ...] = ()


# -- message codec ----------------------------------------------------------------------------------
def encode(request: int, payload: bytes) -> bytes:
    flags = FLAG_VERSION | FLAG_REPLY  # the back-end only ever sends replies
    return HEADER.pack(request, flags, len(payload)) + payload


def decode_header(data: bytes) -> tuple[int, int, int]:
    """(request, flags, payload size) of a 12-byte header."""
    if len(data) != HEADER.size:
        msg = f"vhost-user header of {len(data)} bytes, expected {HEADER.size}"
        raise ProtocolError(msg)
    request, flags, size = HEADER.unpack(data)
    if flags & 0x3 != FLAG_VERSION:
        msg = f"vhost-user message version {flags & 0x3}, expected {FLAG_VERSION}"
        raise ProtocolError(msg)
    if size > MAX_PAYLOAD:
        msg = f"vhost-user payload of {size} bytes (request {request})"
        raise ProtocolError(msg)
    return request, flags, size


def _exact(payload: bytes, fmt: struct.Struct, what: str) -> tuple[int, ...]:
    if len(payload) < fmt.size:
        msg = f"{what}: payload of {len(payload)} bytes, expected {fmt.size}"
        raise ProtocolError(msg)
    return fmt.unpack_from(payload)


def decode_u64(payload: bytes) -> int:
    return _exact(payload, _U64, "u64")[0]


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_vring_state(payload: bytes) -> tuple[int, int]:
    index, num = _exact(payload, _VRING_STATE, "vring state")
    return index, num


def encode_vring_state(index: int, num: int) -> bytes:
    return _VRING_STATE.pack(index, num)


@dataclass(frozen=True)
class VringAddr:
    index: int
    desc: int  # these three are addresses in the front-end's (QEMU's) virtual memory
    used: int
    avail: int


def decode_vring_addr(payload: bytes) -> VringAddr:
    index, _flags, desc, used, avail, _log = _exact(payload, _VRING_ADDR, "vring address")
    return VringAddr(index, desc, used, avail)


def decode_vring_fd(payload: bytes) -> tuple[int, bool]:
    """(queue index, whether an fd came with it) of SET_VRING_KICK/CALL/ERR."""
    value = decode_u64(payload)
    return value & 0xFF, not value & VRING_NOFD


@dataclass(frozen=True)
class Region:
    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


def decode_mem_table(payload: bytes) -> list[Region]:
    if len(payload) < 8:
        msg = f"memory table: payload of {len(payload)} bytes"
        raise ProtocolError(msg)
    (count,) = struct.unpack_from("<I", payload)
    if count > MAX_FDS or len(payload) < 8 + count * _REGION.size:
        msg = f"memory table of {count} regions in {len(payload)} bytes"
        raise ProtocolError(msg)
    return [Region(*_REGION.unpack_from(payload, 8 + i * _REGION.size)) for i in range(count)]


def decode_config_request(payload: bytes) -> tuple[int, int]:
    """(offset, size) asked for by GET_CONFIG."""
    offset, size, _flags = _exact(payload, _CONFIG, "config request")
    return offset, size


def encode_config(offset: int, data: bytes) -> bytes:
    return _CONFIG.pack(offset, len(data), 0) + data


def receive(sock: socket.socket) -> Message | None:
    """One message and its fds, or None when the front-end hung up."""
    fds = array.array("i")
    header, ancillary, _flags, _addr = sock.recvmsg(HEADER.size, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not header:
        return None
    request, flags, size = decode_header(header)
    payload = b""
    while len(payload) < size:
        chunk = sock.recv(size - len(payload))
        if not chunk:
            msg = f"vhost-user message {request} cut short"
            raise ProtocolError(msg)
        payload += chunk
    return Message(request, flags, payload, tuple(fds))


# -- guest memory -----------------------------------------------------------------------------------
@dataclass
class _Mapped:
    region: Region
    map: mmap.mmap


@dataclass
class GuestMemory:
    """The guest's RAM, shared with QEMU through the fds of SET_MEM_TABLE."""

    mapped: list[_Mapped] = field(default_factory=list)

    @classmethod
    def from_table(cls, regions: list[Region], fds: tuple[int, ...]) -> GuestMemory:
        if len(fds) != len(regions):
            msg = f"memory table of {len(regions)} regions came with {len(fds)} fds"
            raise ProtocolError(msg)
        memory = cls()
        for region, fd in zip(regions, fds, strict=True):
            try:
                mapped = mmap.mmap(fd, region.size + region.mmap_offset, mmap.MAP_SHARED)
            finally:
                os.close(fd)
            memory.mapped.append(_Mapped(region, mapped))
        return memory

    def close(self) -> None:
        for mapped in self.mapped:
            mapped.map.close()
        self.mapped.clear()

    def at_guest(self, addr: int, length: int) -> tuple[mmap.mmap, int]:
        """The map and offset of ``length`` bytes at guest-physical ``addr``."""
        for m in self.mapped:
            if m.region.guest_addr <= addr and addr + length <= m.region.guest_addr + m.region.size:
                return m.map, m.region.mmap_offset + addr - m.region.guest_addr
        msg = f"guest address {addr:#x}+{length} is outside the memory table"
        raise ProtocolError(msg)

    def at_user(self, addr: int) -> tuple[mmap.mmap, int]:
        """The map and offset of QEMU's virtual address ``addr`` (vring addresses use these)."""
        for m in self.mapped:
            if m.region.user_addr <= addr < m.region.user_addr + m.region.size:
                return m.map, m.region.mmap_offset + addr - m.region.user_addr
        msg = f"front-end address {addr:#x} is outside the memory table"
        raise ProtocolError(msg)


# -- split virtqueues -------------------------------------------------------------------------------
@dataclass
class Chain:
    """One descriptor chain: the buffers the driver lets us read, then those we may fill."""

    head: int
    readable: list[tuple[mmap.mmap, int, int]]
    writable: list[tuple[mmap.mmap, int, int]]

    def read(self) -> bytes:
        return b"".join(m[off : off + n] for m, off, n in self.readable)

    @property
    def room(self) -> int:
        return sum(n for _m, _off, n in self.writable)

    def write(self, data: bytes) -> int:
        done = 0
        for m, off, n in self.writable:
            part = data[done : done + n]
            m[off : off + len(part)] = part
            done += len(part)
            if done == len(data):
                break
        return done


@dataclass
class Vring:
    index: int
    num: int = 0
    next_avail: int = 0  # SET_VRING_BASE / GET_VRING_BASE
    addr: VringAddr | None = None
    kick: int | None = None
    call: int | None = None
    enabled: bool = False

    @property
    def ready(self) -> bool:
        return self.enabled and self.addr is not None and self.kick is not None and self.num > 0

    def pop(self, memory: GuestMemory) -> Chain | None:
        """The next chain the driver made available, or None."""
        if self.addr is None:
            return None
        avail, avail_off = memory.at_user(self.addr.avail)
        if _U16.unpack_from(avail, avail_off + 2)[0] == self.next_avail:
            return None
        (head,) = _U16.unpack_from(avail, avail_off + 4 + 2 * (self.next_avail % self.num))
        self.next_avail = (self.next_avail + 1) & 0xFFFF
        return self._chain(memory, self.addr.desc, head)

    def _chain(self, memory: GuestMemory, desc: int, head: int) -> Chain:
        table, table_off = memory.at_user(desc)
        chain = Chain(head, [], [])
        index = head
        for _ in range(self.num):
            if index >= self.num:
                msg = f"descriptor {index} outside a ring of {self.num}"
                raise ProtocolError(msg)
            addr, length, flags, following = _DESC.unpack_from(table, table_off + _DESC.size * index)
            buffer = (*memory.at_guest(addr, length), length)
            (chain.writable if flags & DESC_F_WRITE else chain.readable).append(buffer)
            if not flags & DESC_F_NEXT:
                return chain
            index = following
        msg = f"descriptor chain from {head} loops"
        raise ProtocolError(msg)

    def push(self, memory: GuestMemory, chain: Chain, written: int) -> None:
        """Give ``chain`` back to the driver, ``written`` bytes filled."""
        if self.addr is None:
            msg = f"queue {self.index}: a buffer returned before the ring's address was set"
            raise ProtocolError(msg)
        used, used_off = memory.at_user(self.addr.used)
        (idx,) = _U16.unpack_from(used, used_off + 2)
        _USED.pack_into(used, used_off + 4 + _USED.size * (idx % self.num), chain.head, written)
        _U16.pack_into(used, used_off + 2, (idx + 1) & 0xFFFF)

    def notify(self) -> None:
        if self.call is not None:
            os.write(self.call, encode_u64(1))

    def close(self) -> None:
        for fd in (self.kick, self.call):
            if fd is not None:
                os.close(fd)
        self.kick = self.call = None
