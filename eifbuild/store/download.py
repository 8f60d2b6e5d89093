"""Getting bytes: HTTP(S) and file:// downloads, `apt-get download`, and the shared download cache.

This is the network edge; :mod:`eifbuild.sources.fetch` decides what to fetch and checks the pins.

- :class:`Downloader` streams a URL into a partial file while hashing it: a ``requests`` Session
  with urllib3 ``Retry`` (backoff on connection errors and 5xx), connect/read timeouts, TLS
  verification always on, and resume with ``Range`` (guarded by ``If-Range``) when the connection
  drops mid-body. A partial file left by a killed run is resumed by the next one. A caller with
  its own HTTP client (the OCI registry client: auth, its session) passes the GET to send as
  ``request``;
- :func:`download_checked` is how a caller checks what came (the pins, a blob's digest): a resumed
  download that does not match is fetched once more whole, wrong bytes are never resumed from;
- :func:`apt_download` is the one call to ``apt-get download NAME=VERSION`` (Debian packages are
  reachable by name only, not by URL);
- :class:`SourceCache` is the download cache shared by every project of the user
  (``$EIFBUILD_SOURCES_DIR``, else platformdirs' user cache dir): verified files are kept read-only
  under their sha256, with aliases for other pins (sha512, NAR hash) and a lock per download so
  two processes never fetch the same bytes twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

from .. import __version__, log
from ..errors import ArchiveError, FetchError, FileAccessError, HashMismatch, ToolError
from ..util.bounded import INPUT_CAP, Capped, open_regular
from ..util.fsutil import StreamHasher, atomic_write, copy_hashed, exclusive_lock

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Iterable, Mapping

    import requests

Request = Callable[[str, "Mapping[str, str]"], "requests.Response"]
"""Sends one streamed GET of a URL with extra headers (``Range``, ``If-Range``)."""

RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_USER_AGENT: Final = f"eifbuild/{__version__}"


@dataclass(frozen=True)
class HttpOptions:
    """Network behaviour; tests shorten the waits."""

    retries: int = 4  # per request, by urllib3: connection errors, read timeouts, RETRY_STATUS
    backoff: float = 0.5  # seconds before the 2nd try, doubling after that
    backoff_max: float = 30.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0  # the longest silence tolerated while waiting for bytes
    resume_attempts: int = 5  # reconnections (with Range) after the body was cut off


def _hasher(algorithms: Iterable[str]) -> StreamHasher:
    """Digests of a download: always sha256 (the cache's key), plus what the pins ask for."""
    return StreamHasher(("sha256", *algorithms))


class _Read1:
    """``read`` as ``read1`` of a urllib3 response: whatever arrived, so a stall or a drop loses
    no received bytes; raw bytes, as sent (the pins are of those)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._raw.read1(size, decode_content=False)
        return data


@dataclass(frozen=True)
class Downloaded:
    """A complete download in a partial file: its digests (always sha256) and size."""

    path: Path
    digests: dict[str, str]
    size: int
    resumed: bool  # the first bytes came from an earlier, interrupted attempt

    @property
    def sha256(self) -> str:
        return self.digests["sha256"]


def discard_partial(part: Path) -> None:
    """Drop a partial download and its resume state (``part.json``): the next fetch starts afresh."""
    for path in (part, part.with_name(part.name + ".json")):
        path.unlink(missing_ok=True)


def download_checked(
    fetch: Callable[[], Downloaded], check: Callable[[Downloaded], None], *, what: str
) -> Downloaded:
    """``fetch`` (which resumes a partial download), then ``check`` what came.

    A resumed download that does not match (:class:`HashMismatch`) is discarded and fetched once
    more, whole. Wrong bytes (``check`` raising HashMismatch or :class:`ArchiveError`) are discarded
    before the error goes up: no later run resumes from them. A failed transfer (``fetch``'s
    :class:`FetchError`) keeps its partial file for the next run to resume.
    """
    got = fetch()
    try:
        try:
            check(got)
        except HashMismatch:
            if not got.resumed:
                raise
            log.info(f"{what}: the resumed download does not match; fetching it whole")
            discard_partial(got.path)
            got = fetch()
            check(got)
    except (HashMismatch, ArchiveError):
        discard_partial(got.path)  # wrong bytes: never resume from them
        raise
    return got


# -- HTTP --------------------------------------------------------------------------------------------
def failure_reason(exc: BaseException) -> str:
    """A short reason for a requests/urllib3 exception (their own messages are long reprs)."""
    import requests  # noqa: PLC0415 - requests is imported only when something is downloaded
    from urllib3.exceptions import (  # noqa: PLC0415
        MaxRetryError,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
    )

    inner: BaseException = exc
    while True:
        if isinstance(inner, MaxRetryError) and inner.reason is not None:
            inner = inner.reason
        elif inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]
        else:
            break
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS verification failed ({inner})"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "could not connect in time"
    if isinstance(inner, NewConnectionError):  # also name resolution; drop urllib3's "HTTPConnection(…): "
        return "could not connect: " + str(inner).split("): ", 1)[-1]
    if isinstance(inner, (ReadTimeoutError, requests.exceptions.ReadTimeout)):
        return "timed out waiting for data"
    if isinstance(inner, ProtocolError) or "IncompleteRead" in str(inner):
        return "connection dropped mid-body"
    return f"connection failed ({type(inner).__name__}: {inner})"


class Downloader:
    """Fetches URLs into partial files; one Session per instance."""

    def __init__(self, options: HttpOptions | None = None) -> None:
        self.options = options or HttpOptions()
        self._session: requests.Session | None = None

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def _make_session(self) -> requests.Session:
        import requests  # noqa: PLC0415 - keeps `import eifbuild.sources.fetch` cheap for no-op builds
        from requests.adapters import HTTPAdapter  # noqa: PLC0415
        from urllib3.util.retry import Retry  # noqa: PLC0415

        o = self.options
        retry = Retry(
            total=o.retries,
            connect=o.retries,
            read=o.retries,
            status=o.retries,
            backoff_factor=o.backoff,
            backoff_max=o.backoff_max,
            status_forcelist=RETRY_STATUS,
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,  # the last response comes back; we report its status
            respect_retry_after_header=True,
        )
        session = requests.Session()
        session.verify = True  # never configurable: pins protect content, TLS protects privacy
        session.headers.update({"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def download(
        self,
        url: str,
        part: Path,
        algorithms: Iterable[str] = (),
        *,
        request: Request | None = None,
        max_size: int | None = None,
        label: str = "",
    ) -> Downloaded:
        """Fetch ``url`` into ``part`` (resuming what an earlier attempt left there) while hashing.

        ``request`` sends each GET instead of this downloader's session (it must return 200, 206
        and 416 answers and may raise :class:`FetchError` for others); more than ``max_size``
        bytes is a :class:`FetchError`; ``label`` names the progress bar (default: the file name).
        """
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:
            msg = f"not a valid URL: {exc}"
            raise FetchError(msg, url=url) from None
        if scheme == "file":
            local = Path(unquote(urlsplit(url).path))
            return copy_local(local, part, algorithms, what=url, max_size=max_size)
        if scheme not in {"http", "https"}:
            msg = "unsupported URL scheme (expected https://, http:// or file://)"
            raise FetchError(msg, url=url)
        transfer = _HttpTransfer(self, url, part, _hasher(algorithms), request=request, max_size=max_size)
        transfer.label = label or transfer.label
        return transfer.run()


class _HttpTransfer:
    """One download with its resume state: ``part`` plus ``part.json`` (URL and validator)."""

    def __init__(
        self,
        downloader: Downloader,
        url: str,
        part: Path,
        hashers: StreamHasher,
        *,
        request: Request | None = None,
        max_size: int | None = None,
    ) -> None:
        self.options = downloader.options
        self.downloader = downloader
        self.request: Request = request or self._get
        self.max_size = INPUT_CAP.value() if max_size is None else max_size  # nothing declared: the cap
        self.capped = max_size is None
        self.label = _short(url)
        self.url = url
        self.part = part
        self.meta = part.with_name(part.name + ".json")
        self.hashers = hashers
        self.validator = ""
        self.resumed = False
        self.body_started = False

    def run(self) -> Downloaded:
        import requests  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        self._load_partial()
        failures = 0
        while True:
            before = self.hashers.size
            self.body_started = False
            try:
                if self._attempt():
                    break
                continue  # the range was refused: start over at once
            except (requests.RequestException, HTTPError) as exc:
                if not self.body_started:  # urllib3 already retried the request itself
                    raise FetchError(failure_reason(exc), url=self.url) from None
                failures = 0 if self.hashers.size > before else failures + 1
                if failures > self.options.resume_attempts:
                    msg = (
                        f"{failure_reason(exc)}; gave up at byte {self.hashers.size} after {failures} retries"
                    )
                    raise FetchError(msg, url=self.url) from None
                log.info(f"{self.url}: {failure_reason(exc)} at byte {self.hashers.size}; resuming")
                time.sleep(min(self.options.backoff * 2 ** max(failures - 1, 0), self.options.backoff_max))
        self.meta.unlink(missing_ok=True)
        return Downloaded(self.part, self.hashers.hexdigests(), self.hashers.size, self.resumed)

    def _load_partial(self) -> None:
        try:
            meta = json.loads(self.meta.read_bytes())
        except (OSError, ValueError):
            meta = {}
        if meta.get("url") == self.url and self.part.exists():
            self.validator = str(meta.get("validator", ""))
            with open(self.part, "rb") as fh:
                copy_hashed(fh, self.hashers)
            self.resumed = self.hashers.size > 0
            if self.resumed:
                log.info(f"{self.url}: resuming an interrupted download at byte {self.hashers.size}")
        else:
            self._restart()

    def _restart(self) -> None:
        self.hashers.reset()
        self.validator = ""
        self.resumed = False
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.part.write_bytes(b"")

    def _attempt(self) -> bool:
        """One GET; True when the body is complete, False when the partial file had to be dropped."""
        offset = self.hashers.size
        headers = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        with self.request(self.url, headers) as resp:
            status = resp.status_code
            if offset and not self._accept_partial(resp, offset) and status in {200, 206, 416}:
                self._restart()  # the file changed, or the server ignores ranges: take it whole
                if status != 200:
                    return False
            if status >= 400:
                msg = f"HTTP {status} {resp.reason or ''}".rstrip()
                raise FetchError(msg, url=self.url)
            if status == 200:
                self._save_validator(resp)
            length = resp.headers.get("Content-Length", "")
            total = int(length) + self.hashers.size if length.isdigit() else None
            self._check_size(total)
            self.body_started = True
            with open(self.part, "ab") as out, log.progress(self.label, total) as bar:
                bar.update(self.hashers.size)

                def on_chunk(size: int) -> None:
                    bar.update(size)
                    self._check_size(self.hashers.size)

                copy_hashed(_Read1(resp.raw), self.hashers, out, on_chunk=on_chunk)
        return True

    def _get(self, url: str, headers: Mapping[str, str]) -> requests.Response:
        timeout = (self.options.connect_timeout, self.options.read_timeout)
        return self.downloader.session.get(url, headers=headers, stream=True, timeout=timeout)

    def _check_size(self, size: int | None) -> None:
        if size is not None and size > self.max_size:
            msg = f"more than the {self.max_size} bytes expected"
            if self.capped:
                msg = f"more than {self.max_size} bytes (the limit {INPUT_CAP.env} raises)"
            raise FetchError(msg, url=self.url)

    def _accept_partial(self, resp: requests.Response, offset: int) -> bool:
        if resp.status_code != 206:
            return False
        content_range = resp.headers.get("Content-Range", "")
        return content_range.startswith(f"bytes {offset}-")

    def _save_validator(self, resp: requests.Response) -> None:
        etag = resp.headers.get("ETag", "")
        self.validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified", "")
        with atomic_write(self.meta) as fh:
            fh.write(json.dumps({"url": self.url, "validator": self.validator}).encode())


def _short(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1] or url


# -- local files and apt -----------------------------------------------------------------------------
def copy_local(
    source: Path, part: Path, algorithms: Iterable[str] = (), *, what: str = "", max_size: int | None = None
) -> Downloaded:
    """Copy a local file into ``part`` while hashing it (``path =`` sources and file:// URLs): a
    regular file only (a FIFO or device is refused unread), at most ``max_size`` bytes (by default
    the ``EIFBUILD_MAX_INPUT_SIZE`` cap)."""
    hashers = _hasher(algorithms)
    part.parent.mkdir(parents=True, exist_ok=True)
    where = what or str(source)
    named = "" if where == str(source) else f" {source}"  # the caller's name may be the path itself
    limit = INPUT_CAP.value() if max_size is None else max_size

    def too_big(limit: int) -> FetchError:
        msg = f"more than {limit} bytes (the limit {INPUT_CAP.env} raises)"
        return FetchError(msg, url=where)

    try:
        with open_regular(source, what=named.strip() or "the file") as src, open(part, "wb") as out:
            copy_hashed(Capped(src, limit, too_big), hashers, out)
    except FileAccessError as exc:
        raise FetchError(exc.reason, url=where) from None
    except OSError as exc:
        msg = f"cannot read{named}: {exc.strerror}"
        raise FetchError(msg, url=where) from None
    return Downloaded(part, hashers.hexdigests(), hashers.size, resumed=False)


def apt_download(package: str, version: str, dest_dir: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` into ``dest_dir``; the .deb it wrote.

    apt checks the .deb against the signed archive index; the caller still checks the pin.
    """
    cmd = ["apt-get", "download", "-q", f"{package}={version}"]
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(cmd, cwd=dest_dir, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        msg = "apt-get not found: Debian package sources can only be fetched on Debian or Ubuntu"
        raise ToolError(msg, cmd=cmd) from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.startswith("E:")]
        reason = (errors or proc.stderr.strip().splitlines() or ["no output"])[-1]
        msg = f"apt-get download {package}={version} failed: {reason}"
        raise ToolError(msg, cmd=cmd, returncode=proc.returncode, output=proc.stderr)
    debs = sorted(dest_dir.glob("*.deb"))
    if len(debs) != 1:
        msg = f"apt-get download {package}={version} left {len(debs)} .deb files, expected 1"
        raise ToolError(msg, cmd=cmd, output=proc.stdout + proc.stderr)
    return debs[0]


# -- the shared cache --------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    override = os.environ.get("EIFBUILD_SOURCES_DIR")
    if override:
        return Path(override)
    import platformdirs  # noqa: PLC0415

    return platformdirs.user_cache_path("eifbuild") / "sources"


class SourceCache:
    """Verified downloads by sha256, shared by all projects of a user.

    Layout: ``sha256/ab/abcd…`` (read-only files), ``alias/<pin>`` (a sha256 for pins of another
    kind), ``partial/<name>.part`` (downloads in progress or interrupted), ``locks/<name>.lock``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else default_cache_dir()).absolute()

    def blob(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.blob(sha256).is_file()

    def resolve_alias(self, alias: str) -> str | None:
        try:
            sha256 = (self.root / "alias" / alias).read_text().strip()
        except OSError:
            return None
        return sha256 if self.has(sha256) else None

    def add_alias(self, alias: str, sha256: str) -> None:
        with atomic_write(self.root / "alias" / alias) as fh:
            fh.write(sha256.encode() + b"\n")

    def partial(self, name: str) -> Path:
        return self.root / "partial" / f"{name}.part"

    def scratch(self, name: str) -> Path:
        """An empty private directory for tools that write files themselves (apt-get)."""
        path = self.root / "partial" / f"{name}.d"
        if path.exists():
            for old in path.iterdir():
                old.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def discard(self, name: str) -> None:
        discard_partial(self.partial(name))

    def publish(self, file: Path, sha256: str) -> Path:
        """Move a verified file into the cache (read-only) under its sha256."""
        target = self.blob(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(file, 0o444)
        os.replace(file, target)
        return target

    def evict(self, sha256: str) -> None:
        self.blob(sha256).unlink(missing_ok=True)

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive per-download lock across processes (released when the holder dies)."""
        return exclusive_lock(self.root / "locks" / f"{name}.lock")
