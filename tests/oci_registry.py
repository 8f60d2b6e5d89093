"""A real ``docker-registry`` on 127.0.0.1 for tests, optionally behind a token service.

:class:`Registry` writes a config (storage in a temp dir, a free port), starts Debian's
``docker-registry`` and waits until ``/v2/`` answers. With a :class:`TokenService` the registry
uses the distribution token flow (``auth.token``): the service is a small threaded HTTP server in the
test process that signs ES256 JWTs with a throwaway certificate the registry trusts; it grants
pull to everyone (when ``anonymous_pull``) and push/pull to its users (basic auth on the token
request), and records every token request so tests can see the flow happen.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

SERVICE = "eifbuild-test-registry"
ISSUER = "eifbuild-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenRequest:
    user: str | None
    scope: str
    service: str


@dataclass
class TokenService:
    """Issues registry tokens; ``users`` maps user → password."""

    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    anonymous_pull: bool = True
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eifbuild test token issuer")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.workdir / "token-cert.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/token"

    def token(self, user: str | None, scope: str) -> str:
        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = set(actions.split(","))
            allowed = {"pull", "push"} if user else ({"pull"} if self.anonymous_pull else set())
            access.append({"type": kind, "name": name, "actions": sorted(wanted & allowed)})
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                user = None
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if service.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                scope = " ".join(query.get("scope", []))
                service.requests.append(TokenRequest(user, scope, query.get("service", [""])[0]))
                body = json.dumps({"token": service.token(user, scope), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[TokenService]:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes (the only kind docker-registry accepts), made by libcrypt."""
    # cost 4 (16 rounds): the registry checks the hash on every request
    code = (
        "import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"
    )
    lines = []
    for user, password in users.items():
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code, password],
            check=False,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not done.stdout.startswith("$2"):
            pytest.skip(f"no bcrypt in this Python's crypt module: {done.stderr.strip()[-200:]}")
        lines.append(f"{user}:{done.stdout.strip()}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Registry:
    """A docker-registry process with filesystem storage below ``workdir``."""

    def __init__(
        self, binary: str, workdir: Path, tokens: TokenService | None = None, htpasswd: Path | None = None
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = workdir / "storage"
        self.tokens = tokens
        self.htpasswd = htpasswd
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
        ]
        if self.tokens is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.tokens.realm}",
                f"    service: {SERVICE}",
                f"    issuer: {ISSUER}",
                f"    rootcertbundle: {self.tokens.cert_path}",
            ]
        if self.htpasswd is not None:
            lines += ["auth:", "  htpasswd:", "    realm: eifbuild-test", f"    path: {self.htpasswd}"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        config = self.workdir / "config.yml"
        config.write_text(self.config())
        with open(self.workdir / "registry.log", "wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen([self.binary, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {(self.workdir / 'registry.log').read_text()}")
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def blob_file(self, digest: str) -> Path:
        """Where the registry keeps a blob on disk (to corrupt it on purpose)."""
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def push(
        self,
        skopeo: str,
        layout: Path,
        tag: str,
        repo: str,
        *,
        all_images: bool = False,
        creds: str | None = None,
    ) -> None:
        cmd = [skopeo, "copy", "--quiet", "--dest-tls-verify=false"]
        if all_images:
            cmd.append("--all")
        if creds:
            cmd += ["--dest-creds", creds]
        cmd += [f"oci:{layout}:{tag}", f"docker://{self.host}/{repo}:{tag}"]
        subprocess.run(cmd, check=True, capture_output=True)


@dataclass
class ProxiedRequest:
    method: str
    path: str
    range: str | None
    sent: int = 0  # body bytes passed on to the client


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 in front of the registry at ``upstream`` (``host:port``)."""

    def __init__(self, upstream: str, *, trickle: float = 0.0, chunk: int = 16 << 10) -> None:
        self.upstream = upstream
        self.trickle = trickle  # seconds between body chunks of ``chunk`` bytes
        self.chunk = chunk
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"

    def blob_gets(self, digest: str) -> list[ProxiedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/blobs/{digest}")]

    @contextlib.contextmanager
    def running(self) -> Iterator[CountingProxy]:
        thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()

    def forward(self, handler: http.server.BaseHTTPRequestHandler, method: str) -> None:
        record = ProxiedRequest(method, handler.path, handler.headers.get("Range"))
        with self._lock:
            self.requests.append(record)
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        skip = {"host", "connection"}
        conn.request(
            method, handler.path, headers={k: v for k, v in handler.headers.items() if k.lower() not in skip}
        )
        resp = conn.getresponse()
        handler.send_response(resp.status)
        for name, value in resp.getheaders():
            if name.lower() not in {"connection", "transfer-encoding"}:
                handler.send_header(name, value)
        if resp.getheader("Content-Length") is None:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client was killed
            while data := resp.read(self.chunk):
                handler.wfile.write(data)
                handler.wfile.flush()
                record.sent += len(data)
                time.sleep(self.trickle)
        conn.close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self, "GET")

            def do_HEAD(self) -> None:
                proxy.forward(self, "HEAD")

        return Handler
