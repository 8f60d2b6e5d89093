"""Moving one entry's blobs: in parallel (bounded), big blobs as ranged GETs and multipart uploads.

Every request that carries a blob's bytes runs in one small thread pool per entry (at most
:data:`CONCURRENCY` in flight; botocore's client is thread-safe and keeps that many connections).
A blob of :data:`THRESHOLD` bytes or more moves in :data:`PART_SIZE` pieces: ranged GETs written
with ``os.pwrite`` at their offsets into the file the caller opened, and the parts of a multipart
upload read with ``os.pread`` (memory stays at a chunk per request, whatever the blob's size).

A pull hashes each file once, in order: the calling thread reads every piece back as soon as it
(and every piece before it) has landed, while the later pieces are still downloading. That hash is
the store's too (:class:`~eifbuild.store.local.Substituted` ``outputs``), so a pulled byte is read
once by the network and once by the hasher. A blob of the wrong size is refused from the first
response's headers, before its bytes are fetched; a wrong sha256 once it is all there. Nothing is
committed by this module: the caller's temp dir is discarded on any error.

Why not boto3's ``TransferManager``: it gives no hook to hash in order while ranges land, it would
need a second hash pass (or a trusted checksum the manifest already makes redundant), and its
errors, retries and thread limits are a second configuration next to our client's.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ...errors import RemoteCacheError
from ...util.fsutil import CHUNK, StreamHasher
from ._s3 import _MISSING, _code
from .manifest import ManifestRefused

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from ._s3 import S3Bucket

T = TypeVar("T")
PART_SIZE: Final = 8 << 20
THRESHOLD: Final = 32 << 20  # a blob this big or bigger moves in parts
CONCURRENCY: Final = 8  # requests in flight per entry (aws s3 cp: 10)
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_OUT_OF_RANGE: Final = frozenset({"416", "InvalidRange"})


def pieces(size: int) -> list[tuple[int, int]]:
    """(offset, length) of each request for a blob of ``size`` bytes: one below the threshold."""
    if size < THRESHOLD:
        return [(0, size)]
    return [(offset, min(PART_SIZE, size - offset)) for offset in range(0, size, PART_SIZE)]


class _Aborted(RemoteCacheError):
    """Another piece failed: stop this one quietly (the first failure is the one reported). A
    RemoteCacheError, so that the bucket's error mapping lets it through unchanged."""

    def __init__(self) -> None:
        super().__init__("aborted")


@dataclass
class Want:
    """One file to download: its name in the entry (for messages), blob, expected size and sha256,
    and an fd open for reading and writing (the caller's, closed by the caller)."""

    name: str
    blob: str
    sha256: str
    size: int
    fd: int
    hasher: StreamHasher = field(default_factory=StreamHasher)

    def wrong(self, got: str) -> ManifestRefused:
        return ManifestRefused(f"blob of {self.name!r} is {got}, expected {self.size} bytes {self.sha256}")


class _Run:
    """What the threads of one transfer share: the progress bar (behind a lock) and the flag that
    stops them all after the first failure."""

    def __init__(self, on_chunk: Callable[[int], object]) -> None:
        self._update = on_chunk
        self._lock = threading.Lock()
        self.abort = threading.Event()

    def progress(self, n: int) -> None:
        with self._lock:
            self._update(n)

    def check(self) -> None:
        if self.abort.is_set():
            raise _Aborted


@contextlib.contextmanager
def _pool(concurrency: int) -> Any:
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eifbuild-s3")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _settle(futures: Sequence[Future[Any]], run: _Run) -> None:
    """Wait for ``futures``; on the first failure stop the rest and raise it (after they stopped,
    so no thread writes into a file the caller is about to discard)."""
    done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((f for f in futures if f in done and f.exception() is not None), None)
    if failed is None:
        return
    run.abort.set()
    for future in futures:
        future.cancel()
    wait(futures)
    raise _first_error(futures, failed)


def _first_error(futures: Sequence[Future[Any]], failed: Future[Any]) -> BaseException:
    """The failure to report: a refusal (it names the blob) before a transport error, never an
    abort."""
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    errors = [e for e in errors if not isinstance(e, _Aborted)]
    refused = [e for e in errors if isinstance(e, ManifestRefused)]
    error = (refused or errors or [failed.exception()])[0]
    return error if error is not None else RemoteCacheError("transfer failed")


# -- download --------------------------------------------------------------------------------------
def download(
    bucket: S3Bucket,
    wants: Iterable[Want],
    *,
    on_chunk: Callable[[int], object],
    concurrency: int = CONCURRENCY,
) -> None:
    """Fill each want's fd from its blob and check its size and sha256; raise ManifestRefused
    naming the first wrong or missing blob, or RemoteCacheError for a transport failure."""
    wants = list(wants)
    run = _Run(on_chunk)
    with _pool(concurrency) as pool:
        jobs = [
            (want, offset, length, pool.submit(_get_piece, bucket, run, want, offset, length))
            for want in wants
            for offset, length in pieces(want.size)
        ]
        futures = [job[3] for job in jobs]
        try:
            for want, offset, length, future in jobs:  # hash in order while later pieces download
                if future.exception() is not None:
                    break
                _hash_back(want, offset, length)
        except BaseException:
            run.abort.set()
            wait(futures)
            raise
        _settle(futures, run)
    for want in wants:
        if want.hasher.size != want.size or want.hasher.hexdigest() != want.sha256:
            got = f"{want.hasher.size} bytes with sha256 {want.hasher.hexdigest()}"
            raise want.wrong(got)


def _hash_back(want: Want, offset: int, length: int) -> None:
    end = offset + length
    while offset < end:
        data = os.pread(want.fd, min(CHUNK, end - offset), offset)
        if not data:
            got = f"shorter than {end} bytes on disk"
            raise want.wrong(got)
        want.hasher.update(data)
        offset += len(data)


def _get_piece(bucket: S3Bucket, run: _Run, want: Want, offset: int, length: int) -> None:
    run.check()
    whole = offset == 0 and length == want.size and want.size < THRESHOLD
    extra = {} if whole else {"Range": f"bytes={offset}-{offset + length - 1}"}
    code = ""
    with bucket._errors(want.blob):
        try:
            response = bucket.client.get_object(
                Bucket=bucket.url.bucket, Key=bucket.url.object_key(want.blob), **extra
            )
        except Exception as exc:
            code = _code(exc)
            if code not in _MISSING | _OUT_OF_RANGE:
                raise
            response = None
    if response is None:
        if code in _MISSING:
            msg = f"blob {want.sha256} of {want.name!r} is missing"
            raise ManifestRefused(msg)
        got = f"shorter than {offset + 1} bytes"
        raise want.wrong(got)
    total = _total_size(response, whole)
    if total != want.size:
        response["Body"].close()
        got = f"{total} bytes"
        raise want.wrong(got)
    with bucket._errors(want.blob):
        body = response["Body"]
        try:
            _write_body(run, body, want.fd, offset, length)
        finally:
            body.close()


def _total_size(response: dict[str, Any], whole: bool) -> int:
    if whole:
        return int(response.get("ContentLength", -1))
    match = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange", "")))
    return int(match[3]) if match else -1


def _write_body(run: _Run, body: Any, fd: int, offset: int, length: int) -> None:
    end = offset + length
    while chunk := body.read(min(CHUNK, end - offset) or 1):
        if offset + len(chunk) > end:
            msg = f"the server sent more than the {length} bytes asked for"
            raise RemoteCacheError(msg)
        view = memoryview(chunk)
        while view:
            written = os.pwrite(fd, view, offset)
            offset += written
            view = view[written:]
        run.progress(len(chunk))
        run.check()
    if offset != end:
        msg = f"connection closed {end - offset} bytes before the end of the range"
        raise RemoteCacheError(msg)


# -- upload ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    """One blob to upload from ``path`` (``size`` bytes, hex ``sha256``)."""

    blob: str
    path: str
    sha256: str
    size: int


def each(call: Callable[[str], T], names: Sequence[str], *, concurrency: int = CONCURRENCY) -> list[T]:
    """``call`` on each name in parallel (small requests such as HEADs), results in order."""
    if len(names) < 2:
        return [call(name) for name in names]
    with _pool(concurrency) as pool:
        return list(pool.map(call, names))


def upload(
    bucket: S3Bucket,
    uploads: Sequence[Upload],
    *,
    on_chunk: Callable[[int], object],
    concurrency: int = CONCURRENCY,
) -> int:
    """Upload ``uploads`` in parallel (multipart from :data:`THRESHOLD` on); return the bytes this
    call wrote (a small blob another pusher wrote meanwhile does not count)."""
    run = _Run(on_chunk)
    written = 0
    multiparts: list[_Multipart] = []
    try:
        with _pool(concurrency) as pool:
            futures: list[Future[Any]] = []
            small: list[tuple[Upload, Future[Any]]] = []
            for item in uploads:
                if item.size < THRESHOLD:
                    future = pool.submit(_put_small, bucket, run, item)
                    small.append((item, future))
                    futures.append(future)
                    continue
                multipart = _Multipart.start(bucket, item)
                multiparts.append(multipart)
                for number, (offset, length) in enumerate(pieces(item.size), start=1):
                    futures.append(pool.submit(multipart.part, run, number, offset, length))
            _settle(futures, run)
        for multipart in multiparts:
            multipart.complete()
            written += multipart.item.size
        written += sum(item.size for item, future in small if future.result())
    except BaseException:
        run.abort.set()
        for multipart in multiparts:
            multipart.abort()
        raise
    return written


def _put_small(bucket: S3Bucket, run: _Run, item: Upload) -> bool:
    run.check()
    with open(item.path, "rb") as fh:
        new = bucket.put(item.blob, fh, content_type="application/octet-stream", sha256=item.sha256)
    run.progress(item.size)
    return new


@dataclass
class _Multipart:
    """One multipart upload of a blob: no ``If-None-Match`` (its name is its content, so a racing
    pusher writes the same bytes) and no checksum header (a full-object SHA-256 is not defined for
    multipart uploads; a pull checks every byte against the signed manifest)."""

    bucket: S3Bucket
    item: Upload
    upload_id: str
    parts: dict[int, str] = field(default_factory=dict)  # part number → ETag
    done: bool = False

    @classmethod
    def start(cls, bucket: S3Bucket, item: Upload) -> _Multipart:
        with bucket._errors(item.blob):
            response = bucket.client.create_multipart_upload(
                Bucket=bucket.url.bucket,
                Key=bucket.url.object_key(item.blob),
                ContentType="application/octet-stream",
            )
        return cls(bucket, item, str(response["UploadId"]))

    def part(self, run: _Run, number: int, offset: int, length: int) -> None:
        run.check()
        with open(self.item.path, "rb") as fh, self.bucket._errors(self.item.blob):
            body = _Slice(fh.fileno(), offset, length)
            response = self.bucket.client.upload_part(
                Bucket=self.bucket.url.bucket,
                Key=self.bucket.url.object_key(self.item.blob),
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=length,
            )
        self.parts[number] = str(response["ETag"])
        run.progress(length)

    def complete(self) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(self.parts.items())]
        with self.bucket._errors(self.item.blob):
            self.bucket.client.complete_multipart_upload(
                Bucket=self.bucket.url.bucket,
                Key=self.bucket.url.object_key(self.item.blob),
                UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
        self.done = True

    def abort(self) -> None:
        """Drop the parts uploaded so far (best effort: a bucket lifecycle rule catches the rest)."""
        if self.done:
            return
        with contextlib.suppress(Exception):
            self.bucket.client.abort_multipart_upload(
                Bucket=self.bucket.url.bucket,
                Key=self.bucket.url.object_key(self.item.blob),
                UploadId=self.upload_id,
            )


class _Slice(io.RawIOBase):
    """``length`` bytes of an open file from ``offset``, read with ``os.pread`` (no shared file
    position between threads); seekable, so botocore can sign it and rewind it for a retry."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd, self._start, self._length, self._pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def __len__(self) -> int:
        return self._length

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._start + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
