"""A shared build cache on S3: signed manifests, pull into the store, push from it (issue #16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...util.lazy import lazy_exports

if TYPE_CHECKING:
    from .cache import RemoteCache, Transfers, blob_name, manifest_name
    from .config import (
        PUSH_ENV,
        REMOTE_ENV,
        REQUIRE_ENV,
        SIGNING_KEY_ENV,
        CacheSettings,
        NamedKey,
        S3Url,
        parse_cache_table,
        parse_named_key,
        parse_s3_url,
        with_environment,
    )
    from .connect import attach
    from .manifest import Manifest, ManifestRefused, SecretKey, body_of, generate_key, open_manifest, sign
    from .push import Pushed, push_entry
    from .s3 import S3Bucket
    from .substitute import pull_entry, verify_remote_entry

__all__ = [
    "PUSH_ENV",
    "REMOTE_ENV",
    "REQUIRE_ENV",
    "SIGNING_KEY_ENV",
    "CacheSettings",
    "Manifest",
    "ManifestRefused",
    "NamedKey",
    "Pushed",
    "RemoteCache",
    "S3Bucket",
    "S3Url",
    "SecretKey",
    "Transfers",
    "attach",
    "blob_name",
    "body_of",
    "generate_key",
    "manifest_name",
    "open_manifest",
    "parse_cache_table",
    "parse_named_key",
    "parse_s3_url",
    "pull_entry",
    "push_entry",
    "sign",
    "verify_remote_entry",
    "with_environment",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
