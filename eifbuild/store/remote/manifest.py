"""The signed manifest of a remote cache entry: what a store entry holds, and who vouches for it.

A manifest is JSON: ``{"manifest": BODY, "signatures": [{"key": NAME, "sig": BASE64}]}``, where
BODY is the step (whose key must be the entry's key), every output (sha256, size, executable bit,
or a symlink's target), the directories (so empty ones survive) and the builder's ``meta``. Each
signature is ed25519 over ``SIGNED_PREFIX + canonical_json(BODY)``. Keys are written like Nix's:
``name:base64`` (the secret file holds the 32-byte seed, the public key its 32 bytes).

An entry is used only if a trusted key signed it, or if it is content-addressed: a pinned source
file, an OCI blob or an uncompressed OCI layer (keyed with its diff_id) whose one output is the file
its own hash names (:func:`content_addressed`).
Everything here is pure: bytes in, records or :class:`ManifestRefused` out.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ...errors import ConfigError
from ...util.bounded import decode_json, json_error
from ..local import listing_problems
from ..step import RawParams, Step, canonical_json
from .config import parse_named_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ..local import StoreEntry
    from .config import NamedKey

MANIFEST_FORMAT: Final = 1
SIGNED_PREFIX: Final = b"eifbuild-cache-manifest-v1\n"
CONTENT_ADDRESSED: Final = "content-addressed"


class ManifestRefused(Exception):
    """The manifest cannot be trusted or is malformed; ``str()`` says why, in one line."""


# -- keys ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretKey:
    name: str
    key: Ed25519PrivateKey

    @classmethod
    def load(cls, path: str | Path) -> SecretKey:
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"cannot read the cache signing key: {exc.__class__.__name__}"
            raise ConfigError(msg, path=path) from None
        parsed = parse_named_key(text)
        if parsed is None:
            msg = "expected 'name:base64' of a 32-byte ed25519 secret key (see 'eifbuild cache keygen')"
            raise ConfigError(msg, path=path)
        return cls(parsed[0], Ed25519PrivateKey.from_private_bytes(parsed[1]))

    def public_text(self) -> str:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}:{base64.b64encode(raw).decode()}"


def generate_key(name: str) -> tuple[str, str]:
    """A fresh key pair as (secret file text, public key text), both ``name:base64``."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat  # noqa: PLC0415

    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    if parse_named_key(f"{name}:{base64.b64encode(seed).decode()}") is None:
        msg = f"key name {name!r}: expected letters, digits and . _ + - (starting with a letter or digit)"
        raise ConfigError(msg)
    return f"{name}:{base64.b64encode(seed).decode()}\n", SecretKey(name, private).public_text()


def trusted_keys(keys: Iterable[NamedKey]) -> dict[str, Ed25519PublicKey]:
    """The public keys (as the config parsed them) by name."""
    return {key.name: Ed25519PublicKey.from_public_bytes(key.raw) for key in keys}


# -- writing ---------------------------------------------------------------------------------------
def body_of(entry: StoreEntry) -> dict[str, Any]:
    """The manifest body of a committed store entry (outputs as its record has them)."""
    dirs = sorted(
        Path(dirpath, name).relative_to(entry.path).as_posix()
        for dirpath, dirnames, _ in os.walk(entry.path)
        for name in dirnames
        if not os.path.islink(os.path.join(dirpath, name))
    )
    return {
        "format": MANIFEST_FORMAT,
        "key": entry.key,
        "step": dict(entry.record["step"]),
        "outputs": {name: dict(out) for name, out in entry.outputs.items()},
        "dirs": dirs,
        "meta": dict(entry.meta),
    }


def sign(body: Mapping[str, Any], key: SecretKey) -> bytes:
    signature = key.key.sign(SIGNED_PREFIX + canonical_json(body))
    doc = {
        "manifest": dict(body),
        "signatures": [{"key": key.name, "sig": base64.b64encode(signature).decode()}],
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"


# -- reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """A verified manifest: the entry's outputs and meta, and who vouched (a key name or
    :data:`CONTENT_ADDRESSED`)."""

    key: str
    step: Step[RawParams]
    outputs: Mapping[str, Mapping[str, Any]]
    dirs: tuple[str, ...]
    meta: Mapping[str, Any]
    trusted_by: str

    def files(self) -> dict[str, Mapping[str, Any]]:
        return {name: out for name, out in sorted(self.outputs.items()) if out["type"] == "file"}

    @property
    def size(self) -> int:
        return sum(int(out["size"]) for out in self.files().values())


def open_manifest(data: bytes, *, key: str, trusted: Mapping[str, Ed25519PublicKey]) -> Manifest:
    """Parse and verify a manifest fetched for ``key``; raise :class:`ManifestRefused` if it is not
    well-formed, not for ``key``, or neither signed by a trusted key nor content-addressed."""
    doc, body = decode_manifest(data)
    step = _step(body, key)
    outputs = parse_outputs(body.get("outputs"))
    dirs = body.get("dirs", [])
    if not isinstance(dirs, list) or not all(isinstance(d, str) and _safe(d) for d in dirs):
        msg = "manifest 'dirs' is not a list of relative paths"
        raise ManifestRefused(msg)
    if problems := listing_problems(outputs, dirs):
        msg = f"corrupt entry: {'; '.join(problems)}"
        raise ManifestRefused(msg)
    meta = body.get("meta", {})
    if not isinstance(meta, dict):
        msg = "manifest 'meta' is not an object"
        raise ManifestRefused(msg)
    signer = _trusted_signer(doc.get("signatures"), body, trusted)
    if signer is None and not content_addressed(step, outputs, meta):
        raise ManifestRefused(_unsigned_reason(doc.get("signatures")))
    return Manifest(key, step, outputs, tuple(dirs), meta, signer or CONTENT_ADDRESSED)


def decode_manifest(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest document (bounded JSON) and its ``manifest`` body of this format; nothing is
    verified yet (:class:`ManifestRefused` when it is not such a document)."""
    try:
        doc = decode_json(data)
    except ValueError as exc:
        msg = f"manifest is not valid JSON: {json_error(exc)}"
        raise ManifestRefused(msg) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifest"), dict):
        msg = "manifest has no 'manifest' object"
        raise ManifestRefused(msg)
    body = doc["manifest"]
    if body.get("format") != MANIFEST_FORMAT:
        msg = f"manifest format {body.get('format')!r} is not {MANIFEST_FORMAT}"
        raise ManifestRefused(msg)
    return doc, body


def _step(body: Mapping[str, Any], key: str) -> Step[RawParams]:
    raw = body.get("step")
    if body.get("key") != key or not isinstance(raw, dict):
        msg = f"manifest is not for key {key}"
        raise ManifestRefused(msg)
    try:
        step = Step.recorded(raw)
    except (KeyError, TypeError):
        msg = "manifest step is malformed"
        raise ManifestRefused(msg) from None
    if step.key != key:
        msg = f"manifest step hashes to {step.key}, not {key}"
        raise ManifestRefused(msg)
    return step


def _safe(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not name.startswith("/") and all(p not in {"", ".", ".."} for p in parts)


def parse_outputs(raw: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(raw, dict):
        msg = "manifest 'outputs' is not an object"
        raise ManifestRefused(msg)
    for name, out in raw.items():
        if not _safe(name) or not isinstance(out, dict):
            msg = f"manifest output {name!r} is malformed"
            raise ManifestRefused(msg)
        if out.get("type") == "symlink" and isinstance(out.get("target"), str):
            continue
        sha, size = out.get("sha256"), out.get("size")
        good_file = isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")
        if out.get("type") != "file" or not good_file or not isinstance(size, int) or size < 0:
            msg = f"manifest output {name!r} is malformed"
            raise ManifestRefused(msg)
    return raw


def _trusted_signer(
    signatures: Any, body: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey]
) -> str | None:
    """The name of the first trusted key with a valid signature, or None."""
    message = SIGNED_PREFIX + canonical_json(body)
    for sig in signatures if isinstance(signatures, list) else []:
        public = trusted.get(str(sig.get("key"))) if isinstance(sig, dict) else None
        if public is None or not isinstance(sig.get("sig"), str):
            continue
        try:
            public.verify(base64.b64decode(sig["sig"], validate=True), message)
        except (InvalidSignature, ValueError):
            continue
        return str(sig["key"])
    return None


def _unsigned_reason(signatures: Any) -> str:
    names = [s.get("key") for s in signatures if isinstance(s, dict)] if isinstance(signatures, list) else []
    if not names:
        return "manifest is not signed"
    return f"no valid signature by a trusted key (signed by: {', '.join(map(str, names))})"


# An image's store entries: kind -> (the one output, the step parameter holding its digest)
IMAGE_ENTRIES: Final = {"oci-blob": ("blob", "digest"), "oci-layer": ("layer.tar", "diff_id")}


def content_addressed(
    step: Step[RawParams], outputs: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]
) -> bool:
    """True when the entry's own hash is its trust: a pinned source file taken as downloaded (its
    one output and every digest in ``meta`` are the sha256 pin), an OCI blob (its digest) or an
    uncompressed OCI layer (its diff_id)."""
    if step.kind in IMAGE_ENTRIES:
        return _image_entry(step, outputs, meta)
    if step.kind != "source":
        return False
    pin, params = step.inputs.get("sha256"), step.params.raw
    plain = not params.get("tree") and not params.get("member") and not params.get("unpack")
    name = params.get("filename")
    out = outputs.get(name, {}) if isinstance(name, str) else {}
    return (
        plain
        and pin is not None
        and set(outputs) == {name}
        and out.get("sha256") == pin
        and meta.get("sha256") == pin
        and meta.get("fetched_sha256") == pin
        and meta.get("size") == out.get("size")
        and meta.get("tree") is False
        and meta.get("filename") == name
    )


def _image_entry(
    step: Step[RawParams], outputs: Mapping[str, Mapping[str, Any]], meta: Mapping[str, Any]
) -> bool:
    """One plain file, named by the digest in the step (which the caller's key already vouches for)."""
    name, param = IMAGE_ENTRIES[step.kind]
    out = outputs.get(name, {})
    digest = str(step.params.raw.get(param, ""))
    named = digest == f"sha256:{out.get('sha256')}"
    return set(outputs) == {name} and named and not out.get("executable") and not meta
