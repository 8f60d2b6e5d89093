"""A small client for the OCI distribution API: references, auth, manifests and blob streams.

- References: ``[host[:port]/]repo[:tag][@sha256:…]``; no host means Docker Hub (``docker.io``,
  served by ``registry-1.docker.io``; one-component names get ``library/``).
- Transport: HTTPS with certificate checks; plain HTTP only for loopback hosts (127.0.0.1,
  localhost, ::1) and hosts listed in ``$EIFBUILD_INSECURE_REGISTRIES`` (comma-separated
  ``host[:port]``). Retries with backoff on connection errors and 5xx.
- Blobs: streamed (:meth:`RegistryClient.blob`), or downloaded into a file with the sources'
  :class:`~eifbuild.store.Downloader` (:meth:`RegistryClient.download_blob`: resumable with
  ``Range``, its GETs sent by this client, so with its session and auth).
- Auth: on a 401 the client answers the registry's challenge: ``Bearer`` (the token flow: ask the
  realm for a pull token for the repository, anonymously or with basic credentials) or ``Basic``.
  Credentials come from ``$EIFBUILD_REGISTRY_USERNAME``/``$EIFBUILD_REGISTRY_PASSWORD``, else from
  a Docker/containers auth file when one is given (``$EIFBUILD_REGISTRY_AUTH_FILE``,
  ``$REGISTRY_AUTH_FILE`` or ``$DOCKER_CONFIG/config.json``; ``auths`` entries only).

Nothing here verifies digests: callers (:mod:`eifbuild.oci`) hash what they read.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .. import log
from ..errors import FetchError, FileAccessError, InputError
from ..store import Downloader, failure_reason
from ..util.bounded import decode_json, network_timeouts, read_regular

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from ..store import Downloaded

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPTED_MANIFESTS: Final = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
MAX_MANIFEST: Final = 4 << 20  # the distribution spec's limit for manifests
DOCKER_HUB: Final = "docker.io"
_HUB_API: Final = "registry-1.docker.io"
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE: Final = re.compile(r"[\w][\w.-]{0,127}")
DIGEST_RE: Final = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_HOST_RE: Final = re.compile(r"(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::[0-9]+)?")
_CHALLENGE_RE: Final = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class RegistryRef:
    """A parsed image reference; ``digest`` pins the content, ``tag`` does not."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        return f"{text}@{self.digest}" if self.digest else text

    def pinned(self, digest: str) -> RegistryRef:
        return RegistryRef(self.host, self.repository, None, digest)

    @property
    def api_host(self) -> str:
        return _HUB_API if self.host == DOCKER_HUB else self.host


def looks_like_registry_ref(text: str) -> bool:
    """True when ``text`` starts with a registry host (has a '.' or ':' or is localhost)."""
    first, sep, _ = text.partition("/")
    return bool(sep) and (first == "localhost" or "." in first or ":" in first or first.startswith("["))


def check_digest(digest: str, ref: str) -> str:
    """``digest`` if it is a well-formed ``sha256:`` digest; ``ref`` is the reference it came from."""
    if not DIGEST_RE.fullmatch(digest):
        msg = f"image reference {ref!r}: bad digest {digest!r}: expected sha256: and 64 hex digits"
        raise InputError(msg)
    return digest


def parse_ref(text: str) -> RegistryRef:
    """Parse ``[host[:port]/]repo[:tag][@digest]`` the way Docker does."""
    rest, _, digest = text.partition("@")
    if digest:
        check_digest(digest, text)
    host = DOCKER_HUB
    if looks_like_registry_ref(rest):
        host, _, rest = rest.partition("/")
        if not _HOST_RE.fullmatch(host):
            msg = f"image reference {text!r}: bad registry host {host!r}"
            raise InputError(msg)
    repository, tag = rest, None
    name, colon, maybe_tag = rest.rpartition(":")
    if colon and "/" not in maybe_tag:
        repository, tag = name, maybe_tag
        if not _TAG_RE.fullmatch(tag):
            msg = f"image reference {text!r}: bad tag {tag!r}"
            raise InputError(msg)
    if host == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPO_RE.fullmatch(repository):
        msg = f"image reference {text!r}: bad repository name {repository!r} (lowercase, digits, '._-/')"
        raise InputError(msg)
    return RegistryRef(host, repository, tag, digest or None)


def _plain_http(host: str) -> bool:
    bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    insecure = {h.strip() for h in os.environ.get("EIFBUILD_INSECURE_REGISTRIES", "").split(",") if h.strip()}
    return bare in _LOOPBACK or host in insecure or bare in insecure


# -- credentials -------------------------------------------------------------------------------------
def _auth_file() -> Path | None:
    for var in ("EIFBUILD_REGISTRY_AUTH_FILE", "REGISTRY_AUTH_FILE"):
        if os.environ.get(var):
            return Path(os.environ[var])
    if os.environ.get("DOCKER_CONFIG"):
        return Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    return None


def _from_auth_file(path: Path, host: str) -> tuple[str, str] | None:
    try:
        doc = decode_json(read_regular(path, limit=1 << 20, what="registry auth file"))
    except OSError as exc:
        msg = f"cannot read registry auth file: {exc}"
        raise FileAccessError(msg, path=path) from None
    except ValueError as exc:
        msg = f"cannot read registry auth file: {exc}"
        raise InputError(msg, path=path) from None
    auths = doc.get("auths", {}) if isinstance(doc, dict) else {}
    names = [host, f"https://{host}", f"http://{host}"]
    if host == DOCKER_HUB:
        names += ["https://index.docker.io/v1/", "index.docker.io"]
    for name in names:
        entry = auths.get(name) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, sep, password = "", "", ""
            if not sep:
                msg = f"auths[{name!r}].auth is not base64 of 'user:password'"
                raise InputError(msg, path=path)
            return user, password
        if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            return entry["username"], entry["password"]
    if isinstance(doc, dict) and (doc.get("credsStore") or host in doc.get("credHelpers", {})):
        log.warn(f"{path}: credential helpers are not supported; no credentials for {host}")
    return None


def credentials(host: str) -> tuple[str, str] | None:
    """Basic credentials for ``host`` from the environment or a given auth file, or None."""
    user = os.environ.get("EIFBUILD_REGISTRY_USERNAME")
    password = os.environ.get("EIFBUILD_REGISTRY_PASSWORD")
    if user and password is not None:
        return user, password
    path = _auth_file()
    return _from_auth_file(path, host) if path is not None and path.exists() else None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(params))


def _error_detail(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
    except (ValueError, AttributeError):
        detail = ""
    return f"HTTP {resp.status_code}" + (f" ({detail})" if detail else "")


class RegistryClient:
    """Talks to one repository of one registry; answers auth challenges once per session."""

    def __init__(self, ref: RegistryRef) -> None:
        self.ref = ref
        scheme = "http" if _plain_http(ref.api_host) else "https"
        self.base = f"{scheme}://{ref.api_host}/v2/{ref.repository}"
        self.session = _session()
        self._auth: str | None = None

    def _send(self, url: str, headers: Mapping[str, str], *, stream: bool) -> requests.Response:
        all_headers = dict(headers)
        if self._auth:
            all_headers["Authorization"] = self._auth
        try:
            return self.session.get(url, headers=all_headers, stream=stream, timeout=network_timeouts())
        except requests.RequestException as exc:
            msg = f"cannot reach the registry: {failure_reason(exc)}"
            raise FetchError(msg, url=url) from None

    def get(
        self, url: str, headers: Mapping[str, str], *, stream: bool = False, ok: Collection[int] = (200,)
    ) -> requests.Response:
        """A GET answered with a status in ``ok`` (a 401 is answered once); else :class:`FetchError`."""
        resp = self._send(url, headers, stream=stream)
        if resp.status_code == 401:  # first contact, or the token expired: answer the challenge once
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            self._auth = self._authorize(challenge)
            resp = self._send(url, headers, stream=stream)
        if resp.status_code in ok:
            return resp
        detail = _error_detail(resp)
        resp.close()
        if resp.status_code in (401, 403):
            msg = (
                f"access denied ({detail}); give credentials with EIFBUILD_REGISTRY_USERNAME/"
                "EIFBUILD_REGISTRY_PASSWORD or an auth file (EIFBUILD_REGISTRY_AUTH_FILE, DOCKER_CONFIG)"
            )
        elif resp.status_code == 404:
            msg = f"not found ({detail})"
        else:
            msg = f"registry error: {detail}"
        raise FetchError(msg, url=url)

    def _authorize(self, challenge: str) -> str | None:
        scheme, params = parse_challenge(challenge)
        creds = credentials(self.ref.host)
        if scheme == "basic":
            if creds is None:
                return None
            return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        realm = params["realm"]
        try:
            resp = self.session.get(realm, params=query, auth=creds, timeout=network_timeouts())
        except requests.RequestException as exc:
            msg = f"cannot reach the token service: {failure_reason(exc)}"
            raise FetchError(msg, url=realm) from None
        if resp.status_code != 200:
            msg = f"token request for {self.ref.repository} refused: {_error_detail(resp)}"
            raise FetchError(msg, url=realm)
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            msg = "token response has no 'token'"
            raise FetchError(msg, url=realm)
        log.info(f"registry: got a pull token for {self.ref.repository} from {realm}")
        return f"Bearer {token}"

    # -- API -----------------------------------------------------------------------------------------
    def manifest(self, reference: str) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest header) of a manifest or index, by tag or digest."""
        url = f"{self.base}/manifests/{reference}"
        resp = self.get(url, {"Accept": ", ".join(ACCEPTED_MANIFESTS)}, stream=True)
        with resp:
            body = _read_limited(resp, MAX_MANIFEST, url)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            return body, media_type, resp.headers.get("Docker-Content-Digest")

    def blob(self, digest: str) -> IO[bytes]:
        """A stream of a blob (follows redirects to storage; Authorization is dropped off-host)."""
        url = f"{self.base}/blobs/{digest}"
        resp = self.get(url, {"Accept-Encoding": "identity"}, stream=True)
        return io.BufferedReader(_BlobStream(resp, url), 1 << 20)

    def download_blob(
        self, digest: str, part: Path, *, max_size: int | None = None, label: str = ""
    ) -> Downloaded:
        """Download a blob into ``part``, resuming what an earlier attempt left there (not verified)."""
        url = f"{self.base}/blobs/{digest}"
        algorithm = digest.partition(":")[0]
        return Downloader().download(
            url, part, (algorithm,), request=self._range_get, max_size=max_size, label=label
        )

    def _range_get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        return self.get(url, {**headers, "Accept-Encoding": "identity"}, stream=True, ok=(200, 206, 416))


class _BlobStream(io.RawIOBase):
    """A response body as a raw stream; transport failures become :class:`FetchError`."""

    def __init__(self, resp: requests.Response, url: str) -> None:
        super().__init__()
        self._resp = resp
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._resp.raw.read(len(buffer), decode_content=True)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            msg = f"download interrupted: {failure_reason(exc)}"
            raise FetchError(msg, url=self._url) from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._resp.close()
        super().close()


def _read_limited(resp: requests.Response, limit: int, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(1 << 16):
        size += len(chunk)
        if size > limit:
            msg = f"manifest larger than {limit} bytes"
            raise FetchError(msg, url=url)
        chunks.append(chunk)
    return b"".join(chunks)


def _session() -> requests.Session:
    retry = Retry(
        total=4,
        connect=4,
        read=1,  # a registry that accepts and stays silent costs two read timeouts (about 15 s)
        status=3,
        backoff_factor=0.5,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "eifbuild"
    return session


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def resolve_tag(ref: RegistryRef) -> RegistryRef:
    """``ref`` pinned to the digest its tag points to now (hashing the manifest we got)."""
    client = RegistryClient(ref)
    reference = ref.tag or "latest"
    body, _, header = client.manifest(reference)
    algorithm = header.split(":", 1)[0] if header else "sha256"
    digest = digest_of(body, algorithm if algorithm in ("sha256", "sha512") else "sha256")
    if header and header != digest:
        msg = f"registry says the manifest is {header} but its bytes hash to {digest}"
        raise FetchError(msg, url=f"{client.base}/manifests/{reference}")
    return ref.pinned(digest)
