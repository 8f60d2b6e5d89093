"""The edge to S3: one small client over boto3 (imported only when a remote cache is used).

Every failure becomes a one-line :class:`RemoteCacheError` naming the ``s3://`` URL and the cause;
credentials come only from boto3's chain and never appear in a message. botocore retries what S3
says to retry (throttling, 5xx, dropped connections) with backoff ("standard" mode). Objects are
streamed (an entry's blobs in parallel, big ones in parts: ``_transfer``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import IO, TYPE_CHECKING, Any, Final

from ...errors import RemoteCacheError, first_line
from ...util.bounded import network_timeouts

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .config import S3Url

EXTRA_HINT: Final = "the S3 cache needs boto3: pip install 'eifbuild[s3]'"
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_EXISTS: Final = frozenset({"412", "PreconditionFailed", "409", "ConditionalRequestConflict"})
_NO_CONDITIONAL: Final = frozenset({"501", "NotImplemented"})
MAX_MANIFEST: Final = 16 << 20
MAX_COPY: Final = 5 << 30  # the largest object one CopyObject request may copy


def _boto3() -> Any:
    try:
        import boto3  # noqa: PLC0415 - optional extra, only when a remote cache is configured
    except ImportError:
        raise RemoteCacheError(EXTRA_HINT) from None
    return boto3


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return ""


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing, HEAD or GET saw it: ``name`` is below the cache's prefix, and
    ``server_time`` the response's Date (HEAD and GET), so an age needs no trust in our clock."""

    name: str
    size: int
    last_modified: datetime.datetime
    etag: str
    server_time: datetime.datetime | None = None

    @property
    def age(self) -> datetime.timedelta:
        now = self.server_time or datetime.datetime.now(datetime.timezone.utc)
        return now - self.last_modified


def _server_time(response: Any) -> datetime.datetime | None:
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None


class S3Bucket:
    """Objects below one ``s3://bucket/prefix``."""

    def __init__(
        self,
        url: S3Url,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        ca_bundle: str | None = None,
    ) -> None:
        self.url = url
        self.endpoint_url = endpoint_url
        self.region = region
        self.ca_bundle = ca_bundle  # None: boto3's own choice ($AWS_CA_BUNDLE, else certifi)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from botocore.config import Config  # noqa: PLC0415 - see _boto3

            connect, read = network_timeouts()
            config = Config(  # two tries of each call: a silent endpoint costs about 15 s in all
                retries={"total_max_attempts": 2, "mode": "standard"},
                connect_timeout=connect,
                read_timeout=read,
                user_agent_extra="eifbuild",
                # botocore's default ("when_supported") sends every upload over HTTPS as aws-chunked
                # with a trailing checksum, which S3-compatible servers such as Ceph RGW refuse (411
                # MissingContentLength). We give a blob's SHA-256 as a plain header instead (put), and
                # check every downloaded byte against the manifest ourselves.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            self._client = _boto3().client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                verify=self.ca_bundle,
                config=config,
            )
        return self._client

    def where(self, name: str) -> str:
        return f"s3://{self.url.bucket}/{self.url.object_key(name)}"

    @contextlib.contextmanager
    def _errors(self, name: str) -> Iterator[None]:
        """Turn whatever boto3, botocore or the socket raised into one RemoteCacheError."""
        try:
            yield
        except RemoteCacheError:
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {first_line(exc)}"
            raise RemoteCacheError(msg, url=self.where(name)) from None

    def _get(self, name: str) -> Any | None:
        try:
            return self.client.get_object(Bucket=self.url.bucket, Key=self.url.object_key(name))
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def _head(self, name: str) -> Any | None:
        try:
            return self.client.head_object(Bucket=self.url.bucket, Key=self.url.object_key(name))
        except Exception as exc:
            if _code(exc) in _MISSING:
                return None
            raise

    def _body(self, name: str, response: Any, limit: int) -> bytes:
        """A GET response's body, refusing more than ``limit`` bytes."""
        data: bytes = response["Body"].read(limit + 1)
        if len(data) > limit:
            msg = f"larger than {limit} bytes"
            raise RemoteCacheError(msg, url=self.where(name))
        return data

    def get_bytes(self, name: str, *, limit: int = MAX_MANIFEST) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        with self._errors(name):
            response = self._get(name)
            return None if response is None else self._body(name, response, limit)

    def exists(self, name: str) -> bool:
        with self._errors(name):
            return self._head(name) is not None

    def put(
        self, name: str, body: IO[bytes] | bytes, *, content_type: str, sha256: str | None = None
    ) -> bool:
        """Create the object unless it exists (``If-None-Match: *`` where the store supports it);
        True when this call wrote it, False when it was there already. ``sha256`` (hex) is sent as
        the object's checksum: AWS S3 then refuses an upload that arrives changed."""
        extra = {"ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode()} if sha256 else {}
        with self._errors(name):
            try:
                self._put(name, body, content_type, conditional=True, **extra)
            except Exception as exc:
                code = _code(exc)
                if code in _EXISTS:
                    return False
                if code not in _NO_CONDITIONAL:
                    raise
                if self.exists(name):
                    return False
                if not isinstance(body, bytes):
                    body.seek(0)
                self._put(name, body, content_type, conditional=False, **extra)
        return True

    def _put(
        self, name: str, body: IO[bytes] | bytes, content_type: str, *, conditional: bool, **extra: str
    ) -> None:
        if conditional:
            extra["IfNoneMatch"] = "*"
        self.client.put_object(
            Bucket=self.url.bucket,
            Key=self.url.object_key(name),
            Body=body,
            ContentType=content_type,
            **extra,
        )

    # -- for pruning (issue #24): ages, self-copies, listings, deletes ---------------------------
    page_size: int | None = None  # objects per listing page (None: the server's, at most 1000)

    def _info(self, name: str, response: Any, size_field: str = "ContentLength") -> ObjectInfo:
        return ObjectInfo(
            name,
            int(response[size_field]),
            response["LastModified"],
            str(response.get("ETag", "")).strip('"'),
            _server_time(response),
        )

    def stat(self, name: str) -> ObjectInfo | None:
        """HEAD: the object's size, LastModified and ETag (and the server's time), or None."""
        with self._errors(name):
            response = self._head(name)
            return None if response is None else self._info(name, response)

    def read(self, name: str, *, limit: int = MAX_MANIFEST) -> tuple[bytes, ObjectInfo] | None:
        """GET: the object's bytes (refusing more than ``limit``) and what it was, or None."""
        with self._errors(name):
            response = self._get(name)
            if response is None:
                return None
            return self._body(name, response, limit), self._info(name, response)

    def touch(self, name: str, *, content_type: str, size: int = 0) -> bool:
        """Make the object's LastModified now by copying it onto itself (same bytes; S3 allows a
        self-copy that replaces the metadata); False when it does not exist (any more). Objects over
        5 GiB are copied in parts."""
        key = self.url.object_key(name)
        source = {"Bucket": self.url.bucket, "Key": key}
        args = {"MetadataDirective": "REPLACE", "ContentType": content_type}
        with self._errors(name):
            try:
                if size > MAX_COPY:
                    from boto3.s3.transfer import TransferConfig  # noqa: PLC0415 - see _boto3

                    config = TransferConfig(multipart_threshold=MAX_COPY, multipart_chunksize=1 << 30)
                    self.client.copy(source, self.url.bucket, key, ExtraArgs=args, Config=config)
                else:
                    self.client.copy_object(Bucket=self.url.bucket, Key=key, CopySource=source, **args)
            except Exception as exc:
                if _code(exc) in _MISSING:
                    return False
                raise
        return True

    def listing(self, prefix: str) -> tuple[list[ObjectInfo], datetime.datetime | None]:
        """Every object whose name starts with ``prefix`` (page by page), and the server's time
        when the listing began (the first page's Date)."""
        base = self.url.object_key("")
        strip = len(base) + 1 if base else 0
        paging = {"PageSize": self.page_size} if self.page_size else {}
        found: list[ObjectInfo] = []
        started: datetime.datetime | None = None
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.url.bucket, Prefix=self.url.object_key(prefix), PaginationConfig=paging
            )
            for page in pages:
                started = started or _server_time(page)
                for obj in page.get("Contents", []):
                    found.append(self._info(obj["Key"][strip:], obj, "Size"))
        return found, started

    def delete(self, name: str) -> None:
        """DELETE one object (no error when it is gone already)."""
        with self._errors(name):
            self.client.delete_object(Bucket=self.url.bucket, Key=self.url.object_key(name))
