"""``eifbuild boot --publish`` on QEMU's nitro-enclave machine: real HTTP clients on the host reach
an HTTP server in the enclave (http_vsock.c, run by eifbuild's init as the app) through the
back-end's host-initiated vsock streams. Slow, like test_boot_nitro.py, whose EIF helpers it uses.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from test_boot_nitro import _eif, _init

from eifbuild.ramdisk import app_entries, bootstrap_entries
from eifbuild.toolchain.zig import compile_c_binary

if TYPE_CHECKING:
    from typing import IO

    from eifbuild.store import Store

pytestmark = pytest.mark.slow

HTTP_C = Path(__file__).with_name("http_vsock.c")
BIG_SIZE = 6 << 20
BIG_BODY = (bytes(range(251)) * (BIG_SIZE // 251 + 1))[:BIG_SIZE]
SMALL_BODY = b"hello from the enclave\n"
UPLOAD = bytes(range(256)) * (3 << 12) + b"tail"  # 3 MiB and 4 bytes, host -> enclave
LISTENING = "http-vsock: listening on vsock port 5000"
BOOT_TIMEOUT = 600


@pytest.fixture(scope="module")
def http_eif(tmp_path_factory: pytest.TempPathFactory, shared_store: Store) -> Path:
    flags = ("-Wall", "-Wextra", "-Werror")
    server = compile_c_binary(
        shared_store, [HTTP_C], arch="x86_64", cflags=flags, output_name="http-vsock"
    ).path
    app = app_entries([], ["/bin/http-vsock"], {}, files={"bin/http-vsock": server})
    tmp = tmp_path_factory.mktemp("http")
    return _eif(tmp, bootstrap_entries(_init(shared_store)), app, name="http")


class Reply(NamedTuple):
    status: int | None  # None: no HTTP answer (see error)
    body: bytes
    error: str = ""


def _get(port: int, path: str) -> Reply:
    """GET with curl (Debian's) when there is one, else Python's http.client."""
    url = f"http://127.0.0.1:{port}{path}"
    if shutil.which("curl"):
        done = subprocess.run(
            ["curl", "-sS", "--http1.0", "--max-time", "300", "-o", "-", "-w", "\n%{http_code}", url],
            capture_output=True,
            check=False,
        )
        body, _, code = done.stdout.rpartition(b"\n")
        if done.returncode != 0:
            return Reply(None, body, f"curl exit {done.returncode}: {done.stderr.decode().strip()}")
        return Reply(int(code), body)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return Reply(response.status, response.read())
    except (OSError, http.client.HTTPException) as exc:
        return Reply(None, b"", f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


class _Reader:
    """A pipe's lines, gathered in a thread; ``wait_for`` a line."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: IO[str]) -> None:
        for line in pipe:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in ln for ln in self.lines), timeout)

    def text(self) -> str:
        self._thread.join(10)
        return "\n".join(self.lines)


def _free_ports(count: int) -> list[int]:
    probes = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports: list[int] = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def _fnv1a(data: bytes) -> int:
    value = 2166136261
    for byte in data:
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _upload(port: int, body: bytes) -> Reply:
    """POST /upload: the enclave reads every byte and says how many and their FNV-1a."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/upload", body=body)
        response = conn.getresponse()
        return Reply(response.status, response.read())
    finally:
        conn.close()


def _post_to_close(port: int) -> str:
    """POST 1 MiB to /close: the enclave reads the head, closes; the host sees an empty reply."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", "/close", body=bytes(1 << 20))
        conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()
    return "an answer"


def test_http_clients_reach_the_enclave_through_publish(
    http_eif: Path, nitro_qemu: str, tmp_path: Path
) -> None:
    port, unserved = _free_ports(2)
    cmd = [sys.executable, "-m", "eifbuild", "boot", str(http_eif), "--qemu", nitro_qemu]
    cmd += ["--timeout", str(BOOT_TIMEOUT), "--cache", str(tmp_path / "store")]
    cmd += ["--publish", f"127.0.0.1:{port}:5000", "--publish", f"{unserved}:5001"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        console, stderr = _Reader(proc.stdout), _Reader(proc.stderr)
        try:
            assert console.wait_for(LISTENING, BOOT_TIMEOUT), console.text()
            refused = _get(unserved, "/small")  # nothing listens on the enclave's port 5001
            paths = ["/big"] * 4 + ["/small"] * 16 + ["/close"] * 2 + ["/missing"]
            start = time.monotonic()
            with ThreadPoolExecutor(len(paths) + 2) as pool:
                uploads = [pool.submit(_upload, port, UPLOAD) for _ in range(2)]
                replies = list(pool.map(lambda path: _get(port, path), paths))
                uploaded = [u.result() for u in uploads]
            seconds = time.monotonic() - start
            closed = _post_to_close(port)
            quit_reply = _get(port, "/quit")
            proc.wait(BOOT_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
        out, said = console.text(), stderr.text()
    assert proc.returncode == 0, f"{out}\n{said}"
    assert out.splitlines()[-1].startswith("PASS: the machine shut down ("), out
    assert (refused.status, refused.body) == (None, b""), refused
    for path, reply in zip(paths, replies, strict=True):
        if path == "/big":
            assert (reply.status, len(reply.body)) == (200, BIG_SIZE), reply.error
            assert reply.body == BIG_BODY
        elif path == "/small":
            assert reply == Reply(200, SMALL_BODY)
        elif path == "/close":  # the enclave closed first: an empty reply, not a hang or a reset
            assert (reply.status, reply.body) == (None, b""), reply
            assert "Empty reply from server" in reply.error or "RemoteDisconnected" in reply.error, reply
        else:
            assert reply == Reply(404, b"")
    assert uploaded == [Reply(200, f"{len(UPLOAD)} bytes, fnv1a {_fnv1a(UPLOAD):08x}\n".encode())] * 2
    assert closed == "RemoteDisconnected"
    assert quit_reply == Reply(200, b"bye\n")
    assert f"http-vsock: served {len(paths) + 4} connections" in out
    warnings = [ln for ln in said.splitlines() if ln.startswith("warning:")]
    assert warnings == [
        f"warning: vsock: --publish 127.0.0.1:{unserved} -> enclave vsock port 5001: "
        "the enclave refused the connection (nothing listens there)"
    ]
    total = (4 * BIG_SIZE + 2 * len(UPLOAD)) >> 20
    print(f"{len(paths) + 2} requests at once ({total} MiB both ways) in {seconds:.1f} s")
