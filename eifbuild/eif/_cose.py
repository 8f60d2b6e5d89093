"""The signature section (type 4): COSE_Sign1 over PCR0, in eif_build's exact CBOR layout, encoded,
decoded and verified. Who signs is :mod:`eifbuild.eif.sign`'s business.

Section data = CBOR ``[{"signing_certificate": <PEM bytes>, "signature": <COSE_Sign1 bytes>}]``
where both byte strings are encoded the way serde encodes ``Vec<u8>``: an array of unsigned
integers, one per byte (spec §6.1). The COSE payload is ``{"register_index": 0, "register_value":
<PCR0 bytes as uint array>}``; the algorithm follows the key's curve (ES256/ES384/ES512), and the
signature is raw r‖s.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Final

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ..errors import EifFormatError, SigningError, first_line
from ..util.cbor import bstr, head, sig_structure, tstr, uint

SIGNATURE_MAX_SIZE: Final = 32768  # the hypervisor's limit for the section (AWS README)
KEY_CERT: Final = "signing_certificate"
KEY_SIGNATURE: Final = "signature"
KEY_INDEX: Final = "register_index"
KEY_VALUE: Final = "register_value"


@dataclass(frozen=True)
class CoseAlgorithm:
    name: str
    alg: int  # COSE algorithm id in the protected header
    hash: type[hashes.HashAlgorithm]
    size: int  # bytes per coordinate in r‖s

    @property
    def hash_name(self) -> str:
        """hashlib's name of the hash: ``sha384``."""
        return self.hash().name


COSE_ALGORITHMS: Final[dict[str, CoseAlgorithm]] = {
    "secp256r1": CoseAlgorithm("ES256", -7, hashes.SHA256, 32),
    "secp384r1": CoseAlgorithm("ES384", -35, hashes.SHA384, 48),
    "secp521r1": CoseAlgorithm("ES512", -36, hashes.SHA512, 66),
}
SUPPORTED_KEYS: Final = "an EC key on P-256, P-384 or P-521"


# ---------------------------------------------------------------------------------------------
# CBOR encoding, byte for byte as serde_cbor/ciborium write eif_build's structures


def _uint_array(data: bytes) -> bytes:
    """serde's ``Vec<u8>``: an array with one unsigned integer per byte."""
    return head(4, len(data)) + b"".join(_UINT_BYTES[b] for b in data)


_UINT_BYTES: Final = tuple(uint(b) for b in range(256))


def protected_header(algorithm: CoseAlgorithm) -> bytes:
    """``{1: alg}`` encoded, e.g. ``a1 01 38 22`` for ES384."""
    alg = algorithm.alg
    value = uint(alg) if alg >= 0 else head(1, -1 - alg)
    return head(5, 1) + uint(1) + value


def pcr_payload(register_value: bytes, register_index: int = 0) -> bytes:
    """The signed ``PcrInfo`` map."""
    return (
        head(5, 2)
        + tstr(KEY_INDEX)
        + uint(register_index)
        + tstr(KEY_VALUE)
        + _uint_array(register_value)
    )


def cose_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """Untagged COSE_Sign1 with an empty unprotected map, as aws-nitro-enclaves-cose writes it."""
    return head(4, 4) + bstr(protected) + head(5, 0) + bstr(payload) + bstr(signature)


def signature_section(certificate_pem: bytes, cose: bytes) -> bytes:
    """The section data: a one-element array holding the certificate and the COSE_Sign1."""
    return (
        head(4, 1)
        + head(5, 2)
        + tstr(KEY_CERT)
        + _uint_array(certificate_pem)
        + tstr(KEY_SIGNATURE)
        + _uint_array(cose)
    )


# ---------------------------------------------------------------------------------------------
# Algorithms and signature encodings


def load_certificate(pem: bytes) -> x509.Certificate:
    """The first PEM certificate in ``pem``; ValueError if there is none or it does not parse."""
    return x509.load_pem_x509_certificate(pem)


def cose_algorithm(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> CoseAlgorithm:
    try:
        return COSE_ALGORITHMS[key.curve.name]
    except KeyError:
        msg = f"EC curve {key.curve.name} is not supported: expected {SUPPORTED_KEYS}"
        raise SigningError(msg) from None


def raw_signature(der: bytes, algorithm: CoseAlgorithm) -> bytes:
    """COSE's r‖s (each ``algorithm.size`` bytes) from an ASN.1 DER ECDSA signature."""
    r, s = decode_dss_signature(der)
    return r.to_bytes(algorithm.size, "big") + s.to_bytes(algorithm.size, "big")


def der_signature(raw: bytes, algorithm: CoseAlgorithm) -> bytes:
    """The ASN.1 DER form of a COSE r‖s signature (ValueError if it has the wrong length)."""
    size = algorithm.size
    if len(raw) != 2 * size:
        msg = f"an {algorithm.name} signature is {2 * size} bytes, not {len(raw)}"
        raise ValueError(msg)
    return encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))


def signature_valid(
    key: ec.EllipticCurvePublicKey, algorithm: CoseAlgorithm, message: bytes, raw: bytes
) -> bool:
    """Whether ``raw`` (r‖s) is ``key``'s ECDSA signature of ``message``."""
    with contextlib.suppress(InvalidSignature, ValueError):
        key.verify(der_signature(raw, algorithm), message, ec.ECDSA(algorithm.hash()))
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Decoding and verification


@dataclass(frozen=True)
class SignatureInfo:
    """A decoded signature section (its first entry, the only one eif_build writes)."""

    certificate_pem: bytes
    cose: bytes
    protected: bytes
    payload: bytes
    signature: bytes
    alg: int | None
    register_index: int
    register_value: bytes
    canonical: bool  # one entry, and re-encoding gives the same bytes (QEMU needs this exact layout)
    certificate: x509.Certificate = field(repr=False)


def decode_signature_section(data: bytes) -> SignatureInfo:
    """Decode and structurally check a signature section; malformed input is an EifFormatError."""
    if len(data) > SIGNATURE_MAX_SIZE:
        msg = f"signature section is {len(data)} bytes, over the {SIGNATURE_MAX_SIZE}-byte limit"
        raise EifFormatError(msg)
    outer = _cbor(data, "signature section")
    if not isinstance(outer, list) or not outer or not isinstance(outer[0], dict):
        msg = "signature section is not a non-empty CBOR array of maps"
        raise EifFormatError(msg)
    entry = outer[0]
    cert_pem = _byte_array(entry.get(KEY_CERT), f"signature section {KEY_CERT!r}")
    cose = _byte_array(entry.get(KEY_SIGNATURE), f"signature section {KEY_SIGNATURE!r}")
    protected, payload, signature = _decode_cose(cose)
    alg = _decode_protected(protected)
    index, value = _decode_payload(payload)
    certificate = _embedded_certificate(cert_pem)
    return SignatureInfo(
        certificate_pem=cert_pem,
        cose=cose,
        protected=protected,
        payload=payload,
        signature=signature,
        alg=alg,
        register_index=index,
        register_value=value,
        canonical=len(outer) == 1 and signature_section(cert_pem, cose) == data,
        certificate=certificate,
    )


def _embedded_certificate(pem: bytes) -> x509.Certificate:
    try:
        certificate = load_certificate(pem)
        # cryptography parses some fields lazily: touch the ones describe/verify use.
        certificate.public_key()
        _ = (certificate.issuer, certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    except (ValueError, UnsupportedAlgorithm) as exc:
        msg = f"signature section: the signing certificate is not a usable PEM certificate: {first_line(exc)}"
        raise EifFormatError(msg) from None
    return certificate


def _cbor(data: bytes, what: str) -> object:
    try:
        return cbor2.loads(data)
    except Exception as exc:  # cbor2 raises many exception types for malformed input
        msg = f"{what} is not valid CBOR: {first_line(exc)}"
        raise EifFormatError(msg) from None


def _byte_array(value: object, what: str) -> bytes:
    if not isinstance(value, list) or not all(type(b) is int and 0 <= b <= 255 for b in value):
        msg = f"{what} is not an array of byte values"
        raise EifFormatError(msg)
    return bytes(value)


def _decode_cose(cose: bytes) -> tuple[bytes, bytes, bytes]:
    value = _cbor(cose, "COSE_Sign1")
    if isinstance(value, cbor2.CBORTag) and value.tag == 18:
        value = value.value
    if not (isinstance(value, list) and len(value) == 4 and isinstance(value[1], dict)):
        msg = "COSE_Sign1 is not an array of 4 (protected, unprotected, payload, signature)"
        raise EifFormatError(msg)
    protected, _, payload, signature = value
    if not all(isinstance(part, bytes) for part in (protected, payload, signature)):
        msg = "COSE_Sign1 protected header, payload and signature must be byte strings"
        raise EifFormatError(msg)
    return protected, payload, signature


def _decode_protected(protected: bytes) -> int | None:
    header = _cbor(protected, "COSE protected header") if protected else {}
    if not isinstance(header, dict):
        msg = "COSE protected header is not a map"
        raise EifFormatError(msg)
    alg = header.get(1)
    return alg if type(alg) is int else None


def _decode_payload(payload: bytes) -> tuple[int, bytes]:
    info = _cbor(payload, "COSE payload")
    if not isinstance(info, dict) or type(info.get(KEY_INDEX)) is not int:
        msg = f"COSE payload is not a map with an integer {KEY_INDEX!r}"
        raise EifFormatError(msg)
    return info[KEY_INDEX], _byte_array(info.get(KEY_VALUE), f"COSE payload {KEY_VALUE!r}")


def cose_problem(info: SignatureInfo) -> str | None:
    """Why the COSE_Sign1 does not verify with the embedded certificate's key, or None."""
    key = info.certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in COSE_ALGORITHMS:
        return f"signing certificate has an unsupported key type: expected {SUPPORTED_KEYS}"
    algorithm = COSE_ALGORITHMS[key.curve.name]
    if info.alg != algorithm.alg:
        return (
            f"COSE algorithm {info.alg} does not match the certificate's {key.curve.name} key "
            f"(expected {algorithm.alg}, {algorithm.name})"
        )
    if not signature_valid(key, algorithm, sig_structure(info.protected, info.payload), info.signature):
        return "signature does not verify with the signing certificate's public key"
    return None
