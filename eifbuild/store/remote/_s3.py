"""The edge to S3: one small client over boto3 (imported only when a remote cache is used).

Every failure becomes a one-line :class:`RemoteCacheError` naming the ``s3://`` URL and the cause;
credentials come only from boto3's chain and never appear in a message. botocore retries what S3
says to retry (throttling, 5xx, dropped connections) with backoff ("standard" mode). Objects are
streamed (an entry's blobs in parallel, big ones in parts: ``_transfer``).
"""

from __future__ import annotations

import base64
import contextlib
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

    def get_bytes(self, name: str, *, limit: int = MAX_MANIFEST) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        with self._errors(name):
            response = self._get(name)
            if response is None:
                return None
            data: bytes = response["Body"].read(limit + 1)
        if len(data) > limit:
            msg = f"larger than {limit} bytes"
            raise RemoteCacheError(msg, url=self.where(name))
        return data

    def exists(self, name: str) -> bool:
        with self._errors(name):
            try:
                self.client.head_object(Bucket=self.url.bucket, Key=self.url.object_key(name))
            except Exception as exc:
                if _code(exc) in _MISSING:
                    return False
                raise
        return True

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
