"""Real S3 APIs on 127.0.0.1 for the remote cache tests: moto in server mode (a subprocess on a free
port), Ceph's RADOS Gateway over HTTP and HTTPS (tests/ceph_rgw.py) behind one :class:`S3Target`
face, a proxy that drops the connection in the middle of a blob, and the cache settings and signing
keys a test uses with them."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from eifbuild.store.remote import CacheSettings, generate_key
from eifbuild.store.remote.config import parse_named_key, parse_s3_url
from eifbuild.store.remote.manifest import SecretKey

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from eifbuild.store.remote.config import NamedKey

THROWAWAY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing-not-a-key",
    "AWS_SECRET_ACCESS_KEY": "testing-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; ``stop()`` takes the endpoint down."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)

    @property
    def target(self) -> S3Target:
        return S3Target("moto", self.endpoint)

    def client(self) -> Any:
        return self.target.client()

    def bucket(self, name: str) -> str:
        return self.target.bucket(name)


@dataclass(frozen=True)
class S3Target:
    """One S3 server as the remote-cache tests see it: ``name`` is the test id ("moto",
    "ceph-http", "ceph-https"), ``ca_bundle`` the certificate to trust over HTTPS. Credentials are
    :data:`THROWAWAY_AWS_ENV`'s on every server (Ceph's test user is made with them)."""

    name: str
    endpoint: str
    ca_bundle: str | None = None

    @property
    def https(self) -> bool:
        return self.endpoint.startswith("https://")

    def client(self) -> Any:
        """A boto3 client for tampering and inspection (checksums only when required: Ceph over
        HTTPS refuses botocore's default aws-chunked uploads)."""
        import boto3  # noqa: PLC0415 - the optional extra, imported by the tests that use it
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=THROWAWAY_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=THROWAWAY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            verify=self.ca_bundle,
            config=config,
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def blob_get(command: str, path: str, headers: Mapping[str, str]) -> bool:
    """CuttingProxy's default: cut every GET of a blob (whole or a range)."""
    return command == "GET" and "/blobs/" in path


class CuttingProxy:
    """Forwards HTTP to ``upstream``. A request that ``cut(command, path, headers)`` picks is cut:
    a GET gets its headers and half its body, then the connection is closed (a remote going away in
    the middle of a download); any other request is read and the connection closed without an
    answer (in the middle of an upload). ``requests`` lists (command, path, Range header) of all."""

    def __init__(
        self, upstream_port: int, cut: Callable[[str, str, Mapping[str, str]], bool] = blob_get
    ) -> None:
        self.upstream_port = upstream_port
        self.cut = cut
        self.cuts = 0
        self.requests: list[tuple[str, str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                cut = proxy.cut(self.command, self.path, self.headers)
                if cut and self.command != "GET":
                    proxy.cuts += 1
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                cut = cut and resp.status in {200, 206}
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if cut:
                    proxy.cuts += 1
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# -- the remote cache's settings and keys for a test (the fixtures are in tests/store/conftest.py) --
@dataclass
class Keys:
    secret: SecretKey
    public: str
    path: Path

    @property
    def trusted(self) -> NamedKey:
        """The public key as [cache] trusted_keys holds it, parsed."""
        key = parse_named_key(self.public)
        assert key is not None
        return key


def make_key(tmp_path: Path, name: str) -> Keys:
    secret_text, public = generate_key(name)
    path = tmp_path / f"{name}.secret"
    path.write_text(secret_text)
    return Keys(SecretKey.load(path), public, path)


def settings_for(target: S3Target, keys: Keys) -> CacheSettings:
    """Settings for a fresh bucket on ``target``, trusting and signing with ``keys``."""
    bucket = target.bucket(f"cache-{uuid.uuid4().hex[:12]}")
    return CacheSettings(
        remote=parse_s3_url(f"s3://{bucket}/team/eif"),
        endpoint_url=target.endpoint,
        region="us-east-1",
        trusted_keys=(keys.trusted,),
        signing_key_file=str(keys.path),
        ca_bundle=target.ca_bundle,
    )
