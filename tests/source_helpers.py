"""Test helpers for sources: a real threaded HTTP server on 127.0.0.1 that can misbehave on purpose,
and builders for small tar/zip/.deb archives.

``LocalServer`` serves :class:`Route` s and records every request (path and headers). A route can
answer with an error status, fail the first N requests with 500, redirect, stall before or in the
middle of the body, drop the connection after N bytes, omit Content-Length, trickle the body
slowly, and honour ``Range`` (206) with an ETag, so a client's retry and resume logic meet a real
socket. Other test modules (the DAG's end-to-end tests) may use it too.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import ipaddress
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eifbuild.store.download import HttpOptions

# Short waits keep the suite fast; the logic under test is the same as with the defaults.
FAST: HttpOptions = HttpOptions(
    retries=2, backoff=0.01, backoff_max=0.05, connect_timeout=2.0, read_timeout=0.5, resume_attempts=2
)


def sha(data: bytes) -> str:
    """Hex sha256, as recipes pin it."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    fail_first: int = 0  # answer the first N requests with fail_status
    fail_status: int = 500
    redirect: str | None = None  # 302 to this path
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drops: int = 1  # ... for the first N requests that reach the body
    header_delay: float = 0.0  # seconds before the status line (every request)
    stall: float = 0.0  # seconds of silence after the headers (every request)
    stall_at: int | None = None  # ... or after this many body bytes instead
    trickle: float = 0.0  # seconds between 4 KiB chunks
    ranges: bool = True  # honour Range with 206
    content_length: bool = True
    etag: str = '"v1"'
    served: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]


class LocalServer:
    """``with LocalServer() as srv: srv.serve("/f", data); url = srv.url("/f")``."""

    def __init__(self, *, tls_dir: Path | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.scheme = "http"
        if tls_dir is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_self_signed(tls_dir))
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes = b"", **options: Any) -> str:
        self.routes[path] = Route(body, **options)
        return self.url(path)

    def hits(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]


def _self_signed(directory: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 that no client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def _make_handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"state": server})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: LocalServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.state._lock:
            self.state.requests.append(Request(self.path, dict(self.headers.items())))
            route = self.state.routes.get(self.path)
            if route is not None:
                route.served += 1
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            self._answer(route)

    def _answer(self, route: Route | None) -> None:
        if route is not None and route.header_delay:
            time.sleep(route.header_delay)
        if route is None:
            self._plain(404, b"not found\n")
        elif route.served <= route.fail_first:
            self._plain(route.fail_status, b"try again\n")
        elif route.redirect:
            self.send_response(302)
            self.send_header("Location", route.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route.status != 200:
            self._plain(route.status, b"nope\n")
        else:
            self._body(route)

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self, route: Route) -> None:
        body, start = route.body, 0
        wanted = self.headers.get("Range", "")
        if (
            route.ranges
            and wanted.startswith("bytes=")
            and self.headers.get("If-Range") in (None, route.etag)
        ):
            start = int(wanted[6:].split("-")[0])
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.content_length:
            self.send_header("Content-Length", str(len(body) - start))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self._send(route, body[start:])

    def _send(self, route: Route, data: bytes) -> None:
        drop = route.drop_after if route.dropped < route.drops else None
        if drop is not None:
            route.dropped += 1
            data = data[:drop]
            self.close_connection = True
        stall_at = route.stall_at if route.stall_at is not None else (0 if route.stall else None)
        if stall_at is not None:
            self._write(route, data[:stall_at])
            time.sleep(route.stall)
            data = data[stall_at:]
        self._write(route, data)

    def _write(self, route: Route, data: bytes) -> None:
        for pos in range(0, len(data), 4096):
            self.wfile.write(data[pos : pos + 4096])
            if route.trickle:
                self.wfile.flush()
                time.sleep(route.trickle)
        self.wfile.flush()


# -- archives ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One archive member: a file (data), a directory (dir=True), a symlink or a hard link."""

    name: str
    data: bytes = b""
    mode: int = 0o644
    dir: bool = False
    symlink: str | None = None
    hardlink: str | None = None
    device: bool = False


def make_tar(path: Path, entries: list[Entry], *, compression: str = "gz") -> Path:
    """A tar with ``compression`` gz, bz2, xz, zst or "" (none)."""
    if compression == "zst":
        plain = make_tar(path.with_name(path.name + ".plain"), entries, compression="")
        path.write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
        plain.unlink()
        return path
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.mode = e.mode
            info.mtime = 1_700_000_000
            if e.dir:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif e.symlink is not None:
                info.type, info.linkname = tarfile.SYMTYPE, e.symlink
            elif e.hardlink is not None:
                info.type, info.linkname = tarfile.LNKTYPE, e.hardlink
            elif e.device:
                info.type = tarfile.CHRTYPE
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
                continue
            tar.addfile(info)
    return path


def make_zip(path: Path, entries: list[Entry]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for e in entries:
            info = zipfile.ZipInfo(e.name + ("/" if e.dir and not e.name.endswith("/") else ""))
            info.create_system = 3
            if e.symlink is not None:
                info.external_attr = (0o120777) << 16
                zf.writestr(info, e.symlink)
            elif e.dir:
                info.external_attr = (0o40755 << 16) | 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = (0o100000 | e.mode) << 16
                zf.writestr(info, e.data)
    return path


def make_deb(path: Path, files: dict[str, bytes], *, package: str = "demo", compression: str = "xz") -> Path:
    """A real .deb built by dpkg-deb from ``files`` (paths relative to /)."""
    root = path.parent / f".{path.name}.root"
    if root.exists():
        shutil.rmtree(root)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
        "Maintainer: eifbuild tests <tests@example.invalid>\nDescription: test package\n"
    )
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(path)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)
    return path
