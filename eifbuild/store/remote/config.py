"""The ``[cache]`` table of eif.toml and the environment variables that override it.

``[cache]`` names a shared build cache on S3 (or an S3-compatible store)::

    [cache]
    remote = "s3://bucket/prefix"
    endpoint_url = "https://minio.example:9000"   # optional: S3-compatible stores
    region = "eu-central-1"                        # optional: boto3's default otherwise
    trusted_keys = ["ci-1:BASE64…"]                # ed25519 public keys whose entries are used
    ca_bundle = "certs/internal-ca.pem"            # optional: PEM CAs for an https endpoint_url

Credentials are never read from here: boto3's chain finds them (environment, profile, role).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ...errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ...util.tomltable import TomlTables

REMOTE_ENV: Final = "EIFBUILD_REMOTE_CACHE"  # set or override [cache] remote; empty turns it off
PUSH_ENV: Final = "EIFBUILD_REMOTE_CACHE_PUSH"  # 1: push every step built here
SIGNING_KEY_ENV: Final = "EIFBUILD_CACHE_SIGNING_KEY"  # file holding "name:base64-secret"
REQUIRE_ENV: Final = "EIFBUILD_REQUIRE_REMOTE"  # 1: a remote failure or miss is an error
CACHE_KEYS: Final = frozenset({"remote", "endpoint_url", "region", "trusted_keys", "ca_bundle"})
_URL_RE: Final = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")
_KEY_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
ED25519_KEY_SIZE: Final = 32


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix``; the prefix has no leading or trailing slash ("" for the bucket root)."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def object_key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)


def parse_s3_url(text: str) -> S3Url | None:
    """An ``s3://bucket[/prefix]`` URL, or None when ``text`` is not one."""
    match = _URL_RE.match(text)
    if not match or ".." in match["bucket"]:
        return None
    return S3Url(match["bucket"], (match["prefix"] or "").strip("/"))


class NamedKey(NamedTuple):
    """A ``name:base64`` ed25519 key, parsed: its name and its 32 raw bytes."""

    name: str
    raw: bytes

    @property
    def text(self) -> str:
        return f"{self.name}:{base64.b64encode(self.raw).decode()}"


def parse_named_key(text: str) -> NamedKey | None:
    """``name:base64`` of a 32-byte ed25519 key, or None when malformed."""
    name, sep, encoded = text.strip().partition(":")
    if not sep or not _KEY_NAME_RE.match(name):
        return None
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return NamedKey(name, raw) if len(raw) == ED25519_KEY_SIZE else None


@dataclass(frozen=True)
class CacheSettings:
    """eif.toml's ``[cache]``, then the environment's say (:func:`with_environment`)."""

    remote: S3Url | None = None
    endpoint_url: str | None = None
    region: str | None = None
    trusted_keys: tuple[NamedKey, ...] = ()  # parsed once, by parse_cache_table
    push: bool = False
    require: bool = False
    signing_key_file: str | None = None
    ca_bundle: str | None = None  # PEM file of the CAs to trust; None: boto3's ($AWS_CA_BUNDLE)

    @property
    def enabled(self) -> bool:
        return self.remote is not None


def parse_cache_table(value: Any, ctx: TomlTables, *, base: Path) -> CacheSettings:
    """Validate eif.toml's ``[cache]`` table (errors name the file and the key); a relative
    ``ca_bundle`` is taken from ``base`` (the project directory)."""
    table = ctx.table(value, "cache")
    ctx.only_keys(table, CACHE_KEYS, "cache")
    remote = None
    if "remote" in table:
        text = ctx.string(table["remote"], "cache.remote")
        remote = parse_s3_url(text)
        if remote is None:
            raise ctx.error("cache.remote", f"expected an 's3://bucket/prefix' URL, got {text!r}")
    endpoint = ctx.optional_string(table, "endpoint_url", "cache")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ctx.error("cache.endpoint_url", f"expected an http:// or https:// URL, got {endpoint!r}")
    keys = []
    for i, text in enumerate(ctx.string_list(table.get("trusted_keys", []), "cache.trusted_keys")):
        key = parse_named_key(text)
        if key is None:
            msg = "expected 'name:base64' of a 32-byte ed25519 public key (see 'eifbuild cache keygen')"
            raise ctx.error(f"cache.trusted_keys[{i}]", msg)
        keys.append(key)
    ca_bundle = ctx.optional_string(table, "ca_bundle", "cache")
    return CacheSettings(
        remote,
        endpoint,
        ctx.optional_string(table, "region", "cache"),
        tuple(keys),
        ca_bundle=str(base / ca_bundle) if ca_bundle else None,
    )


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def with_environment(settings: CacheSettings, environ: Mapping[str, str] | None = None) -> CacheSettings:
    """Apply ``EIFBUILD_REMOTE_CACHE`` (set, override, or empty: off), ``…_PUSH``,
    ``EIFBUILD_CACHE_SIGNING_KEY`` and ``EIFBUILD_REQUIRE_REMOTE``."""
    env = os.environ if environ is None else environ
    remote = settings.remote
    if REMOTE_ENV in env:
        text = env[REMOTE_ENV].strip()
        remote = parse_s3_url(text) if text else None
        if text and remote is None:
            msg = f"${REMOTE_ENV}: expected an 's3://bucket/prefix' URL, got {text!r}"
            raise ConfigError(msg)
    return replace(
        settings,
        remote=remote,
        push=settings.push or _flag(env, PUSH_ENV),
        require=settings.require or _flag(env, REQUIRE_ENV),
        signing_key_file=env.get(SIGNING_KEY_ENV) or settings.signing_key_file,
    )
