"""An attestation document's bytes and structure: reading it (raw CBOR, base64 or hex, detected),
the COSE_Sign1 around it and the payload map inside, each checked against what an NSM writes.
Every failure is an :class:`~eifbuild.errors.AttestationError` with a ``structure.*`` code."""

from __future__ import annotations

import base64
import binascii
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Final, TypeVar

from ..errors import AttestationError, FileAccessError
from ._cbor import Malformed, Tagged, decode

MAX_DOCUMENT_SIZE: Final = 64 * 1024  # decoded; AWS's largest (3 x 1024-byte fields, 5 certs) is ~10 KB
MAX_INPUT_SIZE: Final = 2 * MAX_DOCUMENT_SIZE + 4096  # hex doubles it; base64 and line breaks less
COSE_SIGN1_TAG: Final = 18
ES384: Final = -35
EMULATOR_ALG: Final = -1  # QEMU's virtio-nsm: "we don't actually sign the data"
PCR_SIZE: Final = 48
MAX_PCR_INDEX: Final = 31
MAX_FIELD_SIZE: Final = 1024  # public_key, user_data, nonce (the NSM API's limit)
DIGEST: Final = "SHA384"

_HEX: Final = re.compile(rb"[0-9a-fA-F]+")
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/\-_]+={0,2}")
_WHITESPACE: Final = re.compile(rb"\s+")
_T = TypeVar("_T")


@dataclass(frozen=True)
class AttestationDocument:
    """An attestation document's payload (verified when :func:`~eifbuild.attestation.verify`
    returned it), with the COSE parts the signature is over."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: dict[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    protected: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    emulated: bool = False  # QEMU's unsigned shape (alg -1, zero signature and certificate)

    @property
    def timestamp(self) -> datetime:
        """When the NSM made the document (UTC, millisecond precision)."""
        seconds, ms = divmod(self.timestamp_ms, 1000)
        return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(microsecond=ms * 1000)

    def to_json(self) -> dict[str, object]:
        """The payload as JSON values: byte strings in hex, PCR indexes as ``"PCR<n>"``."""

        def hex_or_none(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        return {
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": self.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "timestamp_ms": self.timestamp_ms,
            "pcrs": {f"PCR{index}": value.hex() for index, value in sorted(self.pcrs.items())},
            "public_key": hex_or_none(self.public_key),
            "user_data": hex_or_none(self.user_data),
            "nonce": hex_or_none(self.nonce),
        }


def _refuse(code: str, detail: str) -> AttestationError:
    return AttestationError(f"structure.{code}", detail)


def read_document(source: str | Path) -> bytes:
    """A document's bytes as stored, from a file or ``-`` (stdin), at most one byte over
    :data:`MAX_INPUT_SIZE` (so that a huge input is refused by :func:`parse_document`, not read
    whole). FileAccessError when it cannot be read."""
    try:
        if str(source) == "-":
            return sys.stdin.buffer.read(MAX_INPUT_SIZE + 1)
        with Path(source).open("rb") as fh:
            return fh.read(MAX_INPUT_SIZE + 1)
    except OSError as exc:
        msg = f"cannot read the attestation document: {exc.strerror or exc}"
        raise FileAccessError(msg, path=source) from None


def document_bytes(data: bytes | str) -> bytes:
    """The CBOR bytes of a document given as raw CBOR, base64 (standard or URL-safe, padding
    optional) or hex; whitespace around and inside text encodings is ignored."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_INPUT_SIZE:
        msg = f"the document is over {MAX_INPUT_SIZE} bytes: not an NSM document"
        raise _refuse("size", msg)
    if raw[:1] >= b"\x80":  # CBOR arrays, maps and tags: not ASCII, so never base64 or hex text
        return raw
    text = _WHITESPACE.sub(b"", raw)
    if text and len(text) % 2 == 0 and _HEX.fullmatch(text):
        return binascii.unhexlify(text)
    if text and _BASE64.fullmatch(text):
        standard = text.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
        try:
            return base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
        except binascii.Error:
            pass
    msg = "the document is neither CBOR (a COSE_Sign1 array) nor base64 nor hex"
    raise _refuse("encoding", msg)


def parse_document(data: bytes | str, *, emulator_allowed: bool = False) -> AttestationDocument:
    """Rule 1, structure: the COSE_Sign1 and the payload as an NSM writes them. A document in
    QEMU's unsigned shape is refused (``structure.emulator``) unless ``emulator_allowed``."""
    raw = document_bytes(data)
    if len(raw) > MAX_DOCUMENT_SIZE:
        raise _refuse("size", f"the document is {len(raw)} bytes, over the {MAX_DOCUMENT_SIZE}-byte limit")
    protected, payload, signature = _cose_parts(raw)
    emulated = _check_protected(protected, signature, emulator_allowed)
    return _parse_payload(protected, payload, signature, emulated)


def _decode(data: bytes, what: str, *, top_tags: bool = False) -> object:
    try:
        return decode(data, what=what, top_tags=top_tags)
    except Malformed as exc:
        raise _refuse(exc.code, exc.message) from None


def _cose_parts(raw: bytes) -> tuple[bytes, bytes, bytes]:
    value = _decode(raw, "COSE_Sign1", top_tags=True)
    if isinstance(value, Tagged):
        if value.tag != COSE_SIGN1_TAG:
            msg = f"COSE_Sign1 carries CBOR tag {value.tag}: only tag 18 (COSE_Sign1) is allowed"
            raise _refuse("tag", msg)
        value = value.value
        if isinstance(value, Tagged):
            raise _refuse("tag", "COSE_Sign1 carries two CBOR tags: only one tag 18 is allowed")
    if not isinstance(value, list) or len(value) != 4:
        shape = f"an array of {len(value)}" if isinstance(value, list) else type(value).__name__
        msg = f"not a COSE_Sign1 (an array of 4: protected, unprotected, payload, signature): {shape}"
        raise _refuse("cose", msg)
    protected, unprotected, payload, signature = value
    if not all(isinstance(part, bytes) for part in (protected, payload, signature)):
        raise _refuse("cose", "COSE_Sign1's protected header, payload and signature must be byte strings")
    if unprotected != {}:
        shape = f"{len(unprotected)} entries" if isinstance(unprotected, dict) else "not a map"
        raise _refuse("unprotected", f"the unprotected header must be an empty map ({shape})")
    return protected, payload, signature


def _check_protected(protected: bytes, signature: bytes, emulator_allowed: bool) -> bool:
    """Whether the document is QEMU's unsigned shape (then only with ``emulator_allowed``)."""
    header = _decode(protected, "protected header")
    if header == {1: ES384}:
        return False
    if not isinstance(header, dict) or set(header) != {1} or type(header[1]) is not int:
        raise _refuse("protected", f"the protected header must be exactly {{1: -35}} (ES384): {header!r}")
    if header[1] == EMULATOR_ALG:
        if emulator_allowed:
            return True
        unsigned = "a zero signature" if not any(signature) else "a signature"
        msg = (
            f"alg -1 and {unsigned}: an unsigned document from QEMU's emulated NSM, which proves "
            "nothing (accepted only with --insecure-emulator)"
        )
        raise _refuse("emulator", msg)
    raise _refuse("alg", f"algorithm {header[1]} in the protected header: an NSM signs with ES384 (-35)")


def _parse_payload(protected: bytes, payload: bytes, signature: bytes, emulated: bool) -> AttestationDocument:
    value = _decode(payload, "payload")
    if not isinstance(value, dict):
        raise _refuse("payload", f"the payload is not a CBOR map: {type(value).__name__}")
    if "nitrotpm_pcrs" in value:
        msg = "the payload has nitrotpm_pcrs: an EC2 NitroTPM document, not a Nitro Enclave's"
        raise _refuse("nitrotpm", msg)
    module_id = _field(value, "module_id", str)
    digest = _field(value, "digest", str)
    if digest != DIGEST:
        raise _refuse("field", f"digest is {digest!r}, not {DIGEST!r}")
    timestamp = _field(value, "timestamp", int)
    if isinstance(timestamp, bool) or timestamp < 0:
        raise _refuse("field", f"timestamp is not an unsigned integer: {timestamp!r}")
    cabundle = _field(value, "cabundle", list)
    if not cabundle or not all(isinstance(cert, bytes) and cert for cert in cabundle):
        raise _refuse("field", "cabundle must be a non-empty array of byte strings")
    return AttestationDocument(
        module_id=module_id,
        digest=digest,
        timestamp_ms=timestamp,
        pcrs=_pcrs(_field(value, "pcrs", dict)),
        certificate=_field(value, "certificate", bytes),
        cabundle=tuple(cabundle),
        public_key=_optional(value, "public_key"),
        user_data=_optional(value, "user_data"),
        nonce=_optional(value, "nonce"),
        protected=protected,
        payload=payload,
        signature=signature,
        emulated=emulated,
    )


_TYPE_NAMES: Final = {str: "text", int: "an integer", list: "an array", dict: "a map", bytes: "bytes"}


def _field(payload: dict[object, object], name: str, kind: type[_T]) -> _T:
    if name not in payload:
        raise _refuse("field", f"the payload has no {name}")
    value = payload[name]
    if not isinstance(value, kind):
        got = "null" if value is None else type(value).__name__
        raise _refuse("field", f"{name} must be {_TYPE_NAMES[kind]}, not {got}")
    return value


def _optional(payload: dict[object, object], name: str) -> bytes | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bytes):
        raise _refuse("field", f"{name} must be bytes or null, not {type(value).__name__}")
    if value is not None and len(value) > MAX_FIELD_SIZE:
        raise _refuse("field", f"{name} is {len(value)} bytes, over the NSM's {MAX_FIELD_SIZE}")
    return value


def _pcrs(value: dict[object, object]) -> dict[int, bytes]:
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index <= MAX_PCR_INDEX:
            raise _refuse("pcrs", f"PCR index {index!r} is not 0..{MAX_PCR_INDEX}")
        if not isinstance(pcr, bytes) or len(pcr) != PCR_SIZE:
            raise _refuse("pcrs", f"PCR{index} is not {PCR_SIZE} bytes")
        pcrs[index] = pcr
    for index in (0, 1, 2):
        if index not in pcrs:
            raise _refuse("pcrs", f"the payload has no PCR{index}")
    return pcrs
