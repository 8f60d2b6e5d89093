"""``verify``: an attestation document checked by four rules, in order: structure, chain, signature,
policy. The first that fails raises :class:`~eifbuild.errors.AttestationError` with its reason code;
when none fails, the verified payload is returned."""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import AttestationError, UsageError
from ..util.cbor import sig_structure
from .chain import aws_root_der, check_chain
from .document import PCR_SIZE, AttestationDocument, parse_document

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cryptography import x509

_COORDINATE: Final = 48  # P-384: r and s are 48 bytes each
DEBUG_PCRS: Final = (0, 1, 2)


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` checked: the document, and which rules and expectations held."""

    document: AttestationDocument
    checked: tuple[str, ...]  # "structure", "chain", "signature", "PCR0", …, "nonce", "max-age"
    insecure_emulator: bool = False  # QEMU's unsigned document: chain and signature were skipped

    # the payload's fields, as the relying party uses them
    @property
    def module_id(self) -> str:
        return self.document.module_id

    @property
    def timestamp(self) -> datetime:
        return self.document.timestamp

    @property
    def pcrs(self) -> dict[int, bytes]:
        return self.document.pcrs

    @property
    def user_data(self) -> bytes | None:
        return self.document.user_data

    @property
    def nonce(self) -> bytes | None:
        return self.document.nonce

    @property
    def public_key(self) -> bytes | None:
        return self.document.public_key

    def to_json(self) -> dict[str, object]:
        return {
            "verified": True,
            **self.document.to_json(),
            "checked": list(self.checked),
            "insecure_emulator": self.insecure_emulator,
        }


def verify(
    document: bytes | str,
    *,
    pcrs: Mapping[int, bytes | str] | None = None,
    nonce: bytes | None = None,
    user_data: bytes | None = None,
    public_key: bytes | None = None,
    max_age: timedelta | None = None,
    at: datetime | None = None,
    allow_debug: bool = False,
    root: bytes | None = None,
    insecure_emulator: bool = False,
) -> Verified:
    """Verify an attestation document (raw CBOR, base64 or hex) against what the caller expects.

    ``pcrs``: expected PCRs by index (48 bytes, or 96 hex digits); ``nonce``, ``user_data`` and
    ``public_key``: the bytes the document must carry; at least one expectation is required
    (UsageError otherwise: verifying against nothing proves nothing). ``max_age``: how old the
    document may be at ``at`` (default now, UTC). ``allow_debug`` accepts an enclave in debug mode
    (PCR0, PCR1 and PCR2 all zero). ``root``: a DER certificate to trust instead of AWS's root.
    ``insecure_emulator`` accepts a document in the unsigned shape QEMU's emulated NSM writes (alg
    -1; 64 zero bytes as signature, certificate and cabundle) and skips the chain and signature
    rules for it, which ``Verified.insecure_emulator`` then says; a signed document is still
    checked in full.

    Raises :class:`~eifbuild.errors.AttestationError` (``code``: the rule and reason) when the
    document is not verified.
    """
    expected_pcrs = _expected_pcrs(pcrs or {})
    if not expected_pcrs and nonce is None and user_data is None and public_key is None:
        msg = "nothing to verify against: expect PCRs, a nonce, user data or a public key"
        raise UsageError(msg)
    when = _as_of(at)
    parsed = parse_document(document, emulator_allowed=insecure_emulator)
    checked = ["structure"]
    if not parsed.emulated:  # a signed document is checked in full, --insecure-emulator or not
        leaf = check_chain(parsed, aws_root_der() if root is None else root, when)
        checked.append("chain")
        _check_signature(parsed, leaf)
        checked.append("signature")
    checked += _check_policy(
        parsed, expected_pcrs, nonce=nonce, user_data=user_data, public_key=public_key,
        max_age=max_age, at=when, allow_debug=allow_debug,
    )  # fmt: skip
    return Verified(parsed, tuple(checked), insecure_emulator=parsed.emulated)


def _as_of(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc)
    if at.tzinfo is None:
        msg = "the time to verify as of needs a time zone (UTC: datetime(..., tzinfo=timezone.utc))"
        raise UsageError(msg, key="at")
    return at


def _expected_pcrs(pcrs: Mapping[int, bytes | str]) -> dict[int, bytes]:
    result: dict[int, bytes] = {}
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index <= 31:
            msg = f"PCR index {index!r} is not 0..31"
            raise UsageError(msg, key="pcrs")
        raw = value
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                msg = f"PCR{index} is not hex: {value!r}"
                raise UsageError(msg, key="pcrs") from None
        if not isinstance(raw, bytes) or len(raw) != PCR_SIZE:
            msg = f"PCR{index} is not {PCR_SIZE} bytes (96 hex digits)"
            raise UsageError(msg, key="pcrs")
        result[index] = raw
    return result


def _check_signature(document: AttestationDocument, leaf: x509.Certificate) -> None:
    """Rule 3: ES384 by the leaf's key over COSE's Sig_structure."""
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AttestationError("signature.key", "the leaf certificate's key is not an EC P-384 key (ES384)")
    raw = document.signature
    if len(raw) != 2 * _COORDINATE:
        detail = f"the signature is {len(raw)} bytes: an ES384 signature is {2 * _COORDINATE} (r and s)"
        raise AttestationError("signature.invalid", detail)
    r, s = int.from_bytes(raw[:_COORDINATE], "big"), int.from_bytes(raw[_COORDINATE:], "big")
    message = sig_structure(document.protected, document.payload)
    with contextlib.suppress(InvalidSignature, ValueError):
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))
        return
    detail = "the ES384 signature does not verify with the leaf certificate's key"
    raise AttestationError("signature.invalid", detail)


def _short(value: bytes | None) -> str:
    if value is None:
        return "absent"
    text = value.hex()
    return text if len(text) <= 24 else f"{text[:24]}… ({len(value)} bytes)"


def _check_policy(
    document: AttestationDocument,
    pcrs: dict[int, bytes],
    *,
    nonce: bytes | None,
    user_data: bytes | None,
    public_key: bytes | None,
    max_age: timedelta | None,
    at: datetime,
    allow_debug: bool,
) -> list[str]:
    """Rule 4: what the caller expects. Returns the names of what was checked."""
    checked = []
    for index, want_pcr in sorted(pcrs.items()):
        got_pcr = document.pcrs.get(index)
        if got_pcr is None or not hmac.compare_digest(got_pcr, want_pcr):
            detail = f"PCR{index} is {_short(got_pcr)}, expected {_short(want_pcr)}"
            raise AttestationError("policy.pcr", detail)
        checked.append(f"PCR{index}")
    if all(not any(document.pcrs[index]) for index in DEBUG_PCRS):
        if not allow_debug:
            detail = "PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode (--allow-debug)"
            raise AttestationError("policy.debug", detail)
        checked.append("debug-allowed")
    fields: list[tuple[str, bytes | None, bytes | None]] = [
        ("nonce", nonce, document.nonce),
        ("user-data", user_data, document.user_data),
        ("public-key", public_key, document.public_key),
    ]
    for name, want, got in fields:
        if want is not None:
            if got is None or not hmac.compare_digest(got, want):
                code, detail = f"policy.{name}", f"{name} is {_short(got)}, expected {_short(want)}"
                raise AttestationError(code, detail)
            checked.append(name)
    if max_age is not None:
        age = at - document.timestamp
        if age > max_age:
            detail = f"the document is {age} old at {at.isoformat()}, more than the {max_age} allowed"
            raise AttestationError("policy.max-age", detail)
        checked.append("max-age")
    return checked
