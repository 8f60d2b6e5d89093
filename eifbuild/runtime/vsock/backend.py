"""A vhost-user-vsock back-end for QEMU's ``nitro-enclave`` machine, run in a thread.

It listens on a unix socket that QEMU connects to (``-chardev socket,path=…`` with the machine's
``vsock=`` option), follows the vhost-user control messages, and serves the guest's stream
connections to the parent instance (CID 3): the enclave heartbeat on port 9000 (0xB7 echoed, as
nitro-cli does) and forwards to host sockets; and it opens streams to the guest for the
connections accepted on published host ports (the parent's REQUEST, from a fresh port per
connection). One select loop over the control socket, the kick eventfds, the listeners and the
host sockets; the rx queue (0) carries packets to the guest, the tx queue (1) packets from it.

A refused or reset connection is said on the host (a warning line): a forward whose target
refuses, a published port the enclave does not accept on, a reset from either side.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import selectors
import socket
import threading
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from ... import log
from ...errors import ToolError, first_line
from . import _vhost_user as vu
from ._packet import HEADER, HOST_CID, PARENT_CID, SHUTDOWN_SEND, Op, Packet, decode
from ._streams import MAX_PAYLOAD, Stream
from .forward import HEARTBEAT_PORT

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from .forward import Forward
    from .publish import Publish

DEFAULT_GUEST_CID: Final = 16
RX, TX = 0, 1
_PENDING_LIMIT: Final = 64  # packets queued for the guest before we stop reading host sockets
_FIRST_HOST_PORT: Final = 49152  # the parent's ports for published connections, one per connection
_LAST_HOST_PORT: Final = 0xFFFFFFFE
_EVENTS_KEPT: Final = 256
_ACCEPT_PAUSE: Final = 1.0  # seconds a published port waits when accepting fails (out of fds)
LINGER: Final = 5.0  # seconds a host socket may take its last bytes after the guest closed


class VsockBackend:
    """``start()`` before QEMU starts, ``stop()`` after it ended; ``heartbeats`` counts answered
    heartbeats, ``error`` is the one line that stopped the back-end, if any."""

    def __init__(
        self,
        socket_path: Path,
        *,
        guest_cid: int = DEFAULT_GUEST_CID,
        forwards: Mapping[int, Forward] | None = None,
        publishes: Sequence[Publish] = (),
    ) -> None:
        self.socket_path = socket_path
        self.guest_cid = guest_cid
        self.forwards = dict(forwards or {})
        self.publishes = tuple(publishes)
        self.heartbeats = 0
        self.error: str | None = None
        self.events: deque[str] = deque(maxlen=_EVENTS_KEPT)  # the latest notes, for tests and debugging
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._control: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._memory = vu.GuestMemory()
        self._vrings = {RX: vu.Vring(RX), TX: vu.Vring(TX)}
        self._streams: dict[tuple[int, int], Stream] = {}
        self._draining: list[Stream] = []  # the guest closed; its last bytes still go to the host
        self._to_guest: deque[Packet] = deque()
        self._publish_listeners: list[socket.socket] = []
        self._paused: list[tuple[float, Publish, socket.socket]] = []  # (until, port, listener)
        self._next_port = _FIRST_HOST_PORT
        self._payload_limit = MAX_PAYLOAD  # what the guest's rx buffers hold, less the header

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Listen on the published host ports and the vhost-user socket, then run the loop; a port
        that cannot be listened on is a ToolError, before QEMU starts."""
        try:
            for publish in self.publishes:
                self._publish(publish, publish.listen())
        except ToolError:
            for sock in self._publish_listeners:
                sock.close()
            raise
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(1)
        except OSError as exc:
            listener.close()
            for sock in self._publish_listeners:
                sock.close()
            msg = f"vsock back-end: cannot listen on {self.socket_path}: {exc.strerror or exc}"
            raise ToolError(msg) from None
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, lambda _events: self._accept(listener))
        self._selector.register(self._wake_r, selectors.EVENT_READ, lambda _events: None)
        # In the caller's context: its log reporter (a ContextVar) shows the back-end's lines too.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="eifbuild-vsock", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        self._close()

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, events in self._selector.select(1.0):
                    callback: Callable[[int], None] = key.data
                    callback(events)
                self._timers()
        except (ToolError, OSError, ValueError) as exc:
            self.error = f"vsock back-end: {first_line(exc)}"
            log.info(self.error)

    def _close(self) -> None:
        for stream in [*self._streams.values(), *self._draining]:
            stream.close()
        self._streams.clear()
        self._draining.clear()
        for vring in self._vrings.values():
            vring.close()
        self._memory.close()
        for sock in (self._control, self._listener, *self._publish_listeners):
            if sock is not None:
                sock.close()
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self.socket_path.unlink()

    def _note(self, event: str) -> None:
        self.events.append(event)
        log.info(f"vsock: {event}")

    def _say(self, event: str) -> None:
        """A refused or reset connection: always shown on the host."""
        self.events.append(event)
        log.warn(f"vsock: {event}")

    # -- vhost-user control -------------------------------------------------------------------------
    def _accept(self, listener: socket.socket) -> None:
        control, _ = listener.accept()
        self._selector.unregister(listener)
        self._control = control
        self._selector.register(control, selectors.EVENT_READ, lambda _events: self._on_control(control))

    def _on_control(self, control: socket.socket) -> None:
        message = vu.receive(control)
        if message is None:  # QEMU is gone
            self._stopping = True
            return
        reply = self._handle(message)
        if reply is not None:
            control.sendall(vu.encode(message.request, reply))

    def _handle(self, m: vu.Message) -> bytes | None:  # noqa: PLR0911 - one answer per request
        """The reply payload for ``m``, or None for requests without a reply."""
        r = vu.Request
        if m.request == r.GET_FEATURES:
            return vu.encode_u64(vu.BACKEND_FEATURES)
        if m.request == r.GET_PROTOCOL_FEATURES:
            return vu.encode_u64(vu.BACKEND_PROTOCOL_FEATURES)
        if m.request == r.GET_CONFIG:
            offset, size = vu.decode_config_request(m.payload)
            config = self.guest_cid.to_bytes(8, "little")
            return vu.encode_config(offset, config[offset : offset + size].ljust(size, b"\0"))
        if m.request == r.GET_VRING_BASE:
            return self._stop_vring(m.payload)
        if m.request in (r.SET_FEATURES, r.SET_PROTOCOL_FEATURES, r.SET_OWNER, r.RESET_OWNER):
            return None
        if m.request == r.SET_MEM_TABLE:
            self._memory.close()
            self._memory = vu.GuestMemory.from_table(vu.decode_mem_table(m.payload), m.fds)
            return None
        self._vring_message(m)
        return None

    def _vring(self, index: int) -> vu.Vring:
        if index not in self._vrings:
            msg = f"queue {index}: a vsock device has queues 0 (rx) and 1 (tx)"
            raise vu.ProtocolError(msg)
        return self._vrings[index]

    def _vring_message(self, m: vu.Message) -> None:
        r = vu.Request
        if m.request in (r.SET_VRING_NUM, r.SET_VRING_BASE, r.SET_VRING_ENABLE):
            index, value = vu.decode_vring_state(m.payload)
            vring = self._vring(index)
            if m.request == r.SET_VRING_NUM:
                vring.num = value
            elif m.request == r.SET_VRING_BASE:
                vring.next_avail = value
            else:
                vring.enabled = bool(value)
                self._service()
        elif m.request == r.SET_VRING_ADDR:
            addr = vu.decode_vring_addr(m.payload)
            self._vring(addr.index).addr = addr
        elif m.request in (r.SET_VRING_KICK, r.SET_VRING_CALL, r.SET_VRING_ERR):
            self._vring_fd(m)
        else:
            for fd in m.fds:
                os.close(fd)
            msg = f"unsupported vhost-user request {m.request}"
            raise vu.ProtocolError(msg)

    def _vring_fd(self, m: vu.Message) -> None:
        index, has_fd = vu.decode_vring_fd(m.payload)
        fd = m.fds[0] if has_fd and m.fds else None
        vring = self._vring(index)
        if m.request == vu.Request.SET_VRING_ERR:
            if fd is not None:
                os.close(fd)
        elif m.request == vu.Request.SET_VRING_CALL:
            if vring.call is not None:
                os.close(vring.call)
            vring.call = fd
        else:
            if vring.kick is not None:
                self._selector.unregister(vring.kick)
                os.close(vring.kick)
            vring.kick = fd
            if fd is not None:
                self._selector.register(fd, selectors.EVENT_READ, lambda _events: self._on_kick(fd))

    def _stop_vring(self, payload: bytes) -> bytes:
        index, _ = vu.decode_vring_state(payload)
        vring = self._vring(index)
        vring.enabled = False
        if vring.kick is not None:
            self._selector.unregister(vring.kick)
            os.close(vring.kick)
            vring.kick = None
        return vu.encode_vring_state(index, vring.next_avail)

    def _on_kick(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 8)
        self._service()

    # -- queues -------------------------------------------------------------------------------------
    def _service(self) -> None:
        """Take what the guest sent, then give it what waits for it."""
        tx = self._vrings[TX]
        if tx.ready:
            taken = False
            while (chain := tx.pop(self._memory)) is not None:
                data = chain.read()
                tx.push(self._memory, chain, 0)
                taken = True
                self._from_guest(decode(data))
            if taken:
                tx.notify()
        self._flush_to_guest()

    def _send(self, packets: list[Packet]) -> None:
        self._to_guest.extend(packets)
        self._flush_to_guest()

    def _flush_to_guest(self) -> None:
        rx = self._vrings[RX]
        given = False
        while self._to_guest and rx.ready:
            chain = rx.pop(self._memory)
            if chain is None:
                break
            self._payload_limit = min(self._payload_limit, chain.room - HEADER.size)
            rx.push(self._memory, chain, chain.write(self._next_for(chain.room)))
            given = True
        if given:
            rx.notify()
        for stream in list(self._streams.values()):
            self._watch_host(stream)

    def _next_for(self, room: int) -> bytes:
        """The next packet for the guest, in a buffer of ``room`` bytes: an RW packet too long for it
        is cut, its rest sent next (Linux posts rx buffers of a page less its skb overhead)."""
        packet = self._to_guest[0]
        data = packet.encode()
        if len(data) <= room:
            self._to_guest.popleft()
            return data
        if packet.op != Op.RW or room <= HEADER.size:
            msg = f"the guest's rx buffer holds {room} bytes, a packet needs {len(data)}"
            raise vu.ProtocolError(msg)
        cut = room - HEADER.size
        self._to_guest[0] = replace(packet, payload=packet.payload[cut:])
        return replace(packet, payload=packet.payload[:cut]).encode()

    # -- streams ------------------------------------------------------------------------------------
    def _from_guest(self, packet: Packet) -> None:  # noqa: C901 - one branch per op
        stream = self._streams.get((packet.src_port, packet.dst_port))
        if stream is not None:
            stream.note_peer(packet)
        if packet.op == Op.REQUEST:
            self._open(packet)
        elif stream is None:
            if packet.op != Op.RST:
                self._send([packet.reply(Op.RST)])
        elif packet.op == Op.RESPONSE:
            if stream.connecting:
                stream.connecting = False
                self._note(f"{stream.label}: the enclave accepted (parent port {stream.parent_port})")
                self._watch_host(stream)
        elif packet.op == Op.RW:
            self._guest_data(stream, packet.payload)
        elif packet.op == Op.SHUTDOWN:
            self._guest_shutdown(stream, packet.flags)
        elif packet.op == Op.RST:
            if stream.connecting:
                self._say(f"{stream.label}: the enclave refused the connection (nothing listens there)")
            elif stream.host is not None:
                self._say(f"{stream.label}: the enclave reset the connection")
            self._end(stream, reset=True)
        elif packet.op == Op.CREDIT_REQUEST:
            self._send([stream.packet(Op.CREDIT_UPDATE)])

    def _open(self, request: Packet) -> None:
        if request.dst_cid not in (PARENT_CID, HOST_CID) or (request.src_port, request.dst_port) in (
            self._streams
        ):
            self._send([request.reply(Op.RST)])
            return
        host = None
        forward = self.forwards.get(request.dst_port)
        if request.dst_port != HEARTBEAT_PORT:
            if forward is None:
                self._say(f"refused a connection to port {request.dst_port} (not forwarded)")
                self._send([request.reply(Op.RST)])
                return
            try:
                host = forward.connect()
            except OSError as exc:
                self._say(
                    f"{forward}: cannot connect: {exc.strerror or exc} (the enclave's connection was reset)"
                )
                self._send([request.reply(Op.RST)])
                return
            self._note(f"guest port {request.src_port} connected: {forward}")
        label = str(forward) if forward is not None else "heartbeat"
        stream = Stream(request.src_port, request.dst_port, request.src_cid, request.dst_cid, host, label)
        stream.note_peer(request)
        self._streams[stream.key] = stream
        self._send([stream.packet(Op.RESPONSE)])

    def _publish(self, publish: Publish, listener: socket.socket) -> None:
        self._publish_listeners.append(listener)
        self._listen_on(publish, listener)

    def _listen_on(self, publish: Publish, listener: socket.socket) -> None:
        def accept(_events: int) -> None:
            self._accept_host(publish, listener)

        self._selector.register(listener, selectors.EVENT_READ, accept)

    def _accept_host(self, publish: Publish, listener: socket.socket) -> None:
        """Each connection waiting on a published port: a REQUEST to the enclave's port."""
        while True:
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors: said, and the port rests a moment
                self._say(f"--publish {publish}: cannot accept: {exc.strerror or exc}")
                self._selector.unregister(listener)
                self._paused.append((time.monotonic() + _ACCEPT_PAUSE, publish, listener))
                return
            conn.setblocking(False)
            port = self._fresh_port(publish.vsock_port)
            label = f"--publish {publish}"
            stream = Stream(publish.vsock_port, port, self.guest_cid, PARENT_CID, conn, label)
            stream.connecting = True
            self._streams[stream.key] = stream
            self._note(f"{label}: connection from {peer[0]}:{peer[1]}, parent port {port}")
            self._send([stream.packet(Op.REQUEST)])

    def _fresh_port(self, guest_port: int) -> int:
        while True:
            port = self._next_port
            self._next_port = port + 1 if port < _LAST_HOST_PORT else _FIRST_HOST_PORT
            if (guest_port, port) not in self._streams:
                return port

    def _guest_data(self, stream: Stream, data: bytes) -> None:
        if stream.host is None:
            answer, beats = stream.heartbeat_answer(data)
            if beats:
                self.heartbeats += beats
                self._note("heartbeat answered (CID 3 port 9000)")
            self._send(answer)
            return
        stream.to_host += data
        self._flush_to_host(stream)

    def _flush_to_host(self, stream: Stream) -> None:
        if stream.host is None:
            return
        if stream.to_host:
            try:
                written = stream.host.send(stream.to_host)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                self._host_failed(stream, exc)
                return
            del stream.to_host[:written]
            if not stream.gone:
                self._send(stream.consumed(written))
        if not stream.to_host and stream.guest_done_sending:
            with contextlib.suppress(OSError):
                stream.host.shutdown(socket.SHUT_WR)
            if stream.gone and stream.host_done_sending:  # both ends said all they had
                self._end(stream)
                return
        self._watch_host(stream)

    def _on_host(self, stream: Stream, events: int) -> None:
        if events & selectors.EVENT_WRITE:
            self._flush_to_host(stream)
        if events & selectors.EVENT_READ and stream.host is not None:
            if stream.gone:
                self._discard(stream, stream.host)
                return
            try:
                data = stream.host.recv(min(stream.peer_credit, self._payload_limit))
            except BlockingIOError:
                return
            except OSError as exc:
                self._host_failed(stream, exc)
                return
            if data:
                self._send([stream.packet(Op.RW, payload=data)])
            else:
                stream.host_done_sending = True
                self._send([stream.packet(Op.SHUTDOWN, flags=SHUTDOWN_SEND)])
            self._watch_host(stream)

    def _watch_host(self, stream: Stream) -> None:
        """Listen to the host socket for what this stream can take now."""
        if stream.host is None:
            return
        events = 0
        if stream.to_host:
            events |= selectors.EVENT_WRITE
        readable = stream.peer_credit > 0 and len(self._to_guest) < _PENDING_LIMIT
        if stream.gone:  # the guest is gone: what the host still sends is dropped (no RST for it)
            readable = True
        if readable and not (stream.host_done_sending or stream.connecting):
            events |= selectors.EVENT_READ
        registered = self._registered(stream.host)
        if not events:
            if registered:
                self._selector.unregister(stream.host)
            return

        def callback(ready: int) -> None:
            self._on_host(stream, ready)

        if registered:
            self._selector.modify(stream.host, events, callback)
        else:
            self._selector.register(stream.host, events, callback)

    def _registered(self, sock: socket.socket) -> bool:
        try:
            self._selector.get_key(sock)
        except KeyError:
            return False
        return True

    def _guest_shutdown(self, stream: Stream, flags: int) -> None:
        if not stream.guest_shutdown(flags):
            self._flush_to_host(stream)
            return
        self._send([stream.packet(Op.RST)])  # the clean end of a vsock stream
        if stream.host is None:
            self._end(stream)
            return
        # A lingering close: the host gets what the guest sent before it closed, then EOF; what the
        # host still sends is read and dropped, so its kernel does not answer it with a RST that
        # would discard the last bytes (for LINGER seconds at most).
        stream.gone = True
        stream.linger_until = time.monotonic() + LINGER
        self._forget(stream)
        self._draining.append(stream)
        self._flush_to_host(stream)

    def _discard(self, stream: Stream, host: socket.socket) -> None:
        """Read what the host sends to a stream whose guest is gone; close at its EOF."""
        try:
            data = host.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return
        stream.host_done_sending = True
        if stream.to_host:
            self._watch_host(stream)
        else:
            self._end(stream)

    def _timers(self) -> None:
        """Close the lingering host sockets whose time is up; listen again on rested ports."""
        now = time.monotonic()
        for stream in [s for s in self._draining if s.linger_until < now]:
            self._end(stream)
        due = [entry for entry in self._paused if entry[0] < now]
        self._paused = [entry for entry in self._paused if entry[0] >= now]
        for _when, publish, listener in due:
            self._listen_on(publish, listener)

    def _host_failed(self, stream: Stream, exc: OSError) -> None:
        """The host socket failed (reset, or closed while the guest still sends): reset the stream."""
        if not stream.gone:
            self._say(f"{stream.label}: the host side reset the connection ({exc.strerror or exc})")
            self._send([stream.packet(Op.RST)])
        self._end(stream)

    def _forget(self, stream: Stream) -> None:
        if self._streams.get(stream.key) is stream:
            del self._streams[stream.key]

    def _end(self, stream: Stream, *, reset: bool = False) -> None:
        if stream.host is not None and self._registered(stream.host):
            self._selector.unregister(stream.host)
        stream.close(reset=reset)
        self._forget(stream)
        if stream in self._draining:
            self._draining.remove(stream)
