"""The vsock stream connections between the guest and the parent (CID 3): the heartbeat, forwards
to host sockets (the guest connects), and published host ports (the host connects). Pure
bookkeeping: packets in, packets out; the loop in ``backend`` moves the bytes.

Credit (virtio spec 5.10.6.3): a side may send ``buf_alloc - (sent - fwd_cnt)`` more bytes, where
``buf_alloc`` and ``fwd_cnt`` are the peer's latest. Ours are carried by every packet we send, and
by a CREDIT_UPDATE when the guest could otherwise stall waiting for room.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Final

from ._packet import SHUTDOWN_RCV, SHUTDOWN_SEND, Op, Packet

BUF_ALLOC: Final = 256 << 10  # what we buffer per connection, guest -> host
MAX_PAYLOAD: Final = 4096 - 44  # a guest rx buffer of one page, header included; the back-end
# lowers it to the buffers the guest really posts
HEARTBEAT_BYTE: Final = 0xB7
_LINGER_RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP RST


@dataclass(eq=False)  # a connection: equal only to itself
class Stream:
    guest_port: int
    parent_port: int
    guest_cid: int
    parent_cid: int
    host: socket.socket | None  # None: the heartbeat, answered here
    label: str = ""  # what the host is told about this stream: the forward or the publish
    connecting: bool = False  # we sent the REQUEST (a published port); no RESPONSE yet
    gone: bool = False  # the guest side ended; the host socket takes its last bytes, then closes
    linger_until: float = 0.0  # when gone: the monotonic time the host socket is closed anyway
    to_host: bytearray = field(default_factory=bytearray)
    fwd_cnt: int = 0  # guest bytes consumed (written to the host, or answered)
    reported_fwd_cnt: int = 0
    sent: int = 0  # bytes sent to the guest
    peer_buf_alloc: int = 0
    peer_fwd_cnt: int = 0
    guest_done_sending: bool = False
    host_done_sending: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return self.guest_port, self.parent_port

    @property
    def peer_credit(self) -> int:
        return max(0, self.peer_buf_alloc - (self.sent - self.peer_fwd_cnt))

    def note_peer(self, packet: Packet) -> None:
        self.peer_buf_alloc = packet.buf_alloc
        self.peer_fwd_cnt = packet.fwd_cnt

    def packet(self, op: int, *, flags: int = 0, payload: bytes = b"") -> Packet:
        """A packet from the parent side of this stream to the guest, our credit included."""
        self.reported_fwd_cnt = self.fwd_cnt
        if op == Op.RW:
            self.sent += len(payload)
        return Packet(
            self.parent_cid,
            self.guest_cid,
            self.parent_port,
            self.guest_port,
            op,
            flags=flags,
            buf_alloc=BUF_ALLOC,
            fwd_cnt=self.fwd_cnt,
            payload=payload,
        )

    def consumed(self, count: int) -> list[Packet]:
        """``count`` guest bytes left our buffer; a credit update if the guest may be waiting."""
        self.fwd_cnt += count
        if self.fwd_cnt - self.reported_fwd_cnt >= BUF_ALLOC // 4:
            return [self.packet(Op.CREDIT_UPDATE)]
        return []

    def heartbeat_answer(self, data: bytes) -> tuple[list[Packet], int]:
        """Echo each heartbeat byte (init sends one, reads one); (packets, heartbeats seen)."""
        self.fwd_cnt += len(data)
        beats = data.count(HEARTBEAT_BYTE)
        out = [self.packet(Op.RW, payload=bytes([HEARTBEAT_BYTE]) * beats)] if beats else []
        return out, beats

    def guest_shutdown(self, flags: int) -> bool:
        """The guest shut down one or both directions; True when the stream should end now."""
        if flags & SHUTDOWN_SEND:
            self.guest_done_sending = True
        return bool(flags & SHUTDOWN_RCV and flags & SHUTDOWN_SEND) or self.host is None

    def close(self, *, reset: bool = False) -> None:
        """Close the host socket; ``reset``: with a TCP RST, so the host client sees the reset."""
        if self.host is not None:
            if reset:
                with contextlib.suppress(OSError):
                    self.host.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            self.host.close()
            self.host = None
