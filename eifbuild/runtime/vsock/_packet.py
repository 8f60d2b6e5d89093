"""virtio-vsock packets: a 44-byte little-endian header, then ``len`` bytes of payload (virtio spec
5.10.6). Stream sockets only; SEQPACKET is not offered to the driver."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Final

from ...errors import ToolError

HEADER: Final = struct.Struct("<QQIIIHHIII")
TYPE_STREAM: Final = 1
SHUTDOWN_RCV: Final = 1
SHUTDOWN_SEND: Final = 2
HOST_CID: Final = 2  # VMADDR_CID_HOST
PARENT_CID: Final = 3  # Nitro's parent instance, where an enclave's init sends its heartbeat


class Op(IntEnum):
    REQUEST = 1
    RESPONSE = 2
    RST = 3
    SHUTDOWN = 4
    RW = 5
    CREDIT_UPDATE = 6
    CREDIT_REQUEST = 7


class PacketError(ToolError):
    """A malformed virtio-vsock packet from the guest."""


@dataclass(frozen=True)
class Packet:
    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    op: int
    type: int = TYPE_STREAM
    flags: int = 0
    buf_alloc: int = 0
    fwd_cnt: int = 0
    payload: bytes = b""

    def encode(self) -> bytes:
        header = HEADER.pack(
            self.src_cid,
            self.dst_cid,
            self.src_port,
            self.dst_port,
            len(self.payload),
            self.type,
            self.op,
            self.flags,
            self.buf_alloc,
            self.fwd_cnt,
        )
        return header + self.payload

    def reply(self, op: int, **fields: int | bytes) -> Packet:
        """A packet back to where this one came from (addresses swapped, no payload by default)."""
        base = Packet(self.dst_cid, self.src_cid, self.dst_port, self.src_port, op, type=self.type)
        return replace(base, **fields)  # type: ignore[arg-type]


def decode(data: bytes) -> Packet:
    if len(data) < HEADER.size:
        msg = f"virtio-vsock packet of {len(data)} bytes, shorter than its {HEADER.size}-byte header"
        raise PacketError(msg)
    src_cid, dst_cid, src_port, dst_port, length, kind, op, flags, buf_alloc, fwd_cnt = HEADER.unpack_from(
        data
    )
    payload = data[HEADER.size : HEADER.size + length]
    if len(payload) != length:
        msg = f"virtio-vsock packet says {length} payload bytes, has {len(payload)}"
        raise PacketError(msg)
    return Packet(src_cid, dst_cid, src_port, dst_port, op, kind, flags, buf_alloc, fwd_cnt, payload)
