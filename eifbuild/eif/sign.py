"""The signature section (type 4): COSE_Sign1 over PCR0, in eif_build's exact CBOR layout.

Section data = CBOR ``[{"signing_certificate": <PEM bytes>, "signature": <COSE_Sign1 bytes>}]``
where both byte strings are encoded the way serde encodes ``Vec<u8>``: an array of unsigned
integers, one per byte (spec §6.1). The COSE payload is ``{"register_index": 0, "register_value":
<PCR0 bytes as uint array>}``; the algorithm follows the key's curve (ES256/ES384/ES512), and the
signature is raw r‖s. Unlike AWS's tools we sign with deterministic ECDSA (RFC 6979), so a signed
EIF is bit-for-bit reproducible.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ..errors import EifFormatError, SigningError, first_line
from .pcr import DEFAULT_ALGO, HashAlgo, measure_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from .metadata import JsonValue

SIGNATURE_MAX_SIZE: Final = 32768  # the hypervisor's limit for the section (AWS README)
KEY_CERT: Final = "signing_certificate"
KEY_SIGNATURE: Final = "signature"
KEY_INDEX: Final = "register_index"
KEY_VALUE: Final = "register_value"
SIG_CONTEXT: Final = "Signature1"


@dataclass(frozen=True)
class CoseAlgorithm:
    name: str
    alg: int  # COSE algorithm id in the protected header
    hash: type[hashes.HashAlgorithm]
    size: int  # bytes per coordinate in r‖s


COSE_ALGORITHMS: Final[dict[str, CoseAlgorithm]] = {
    "secp256r1": CoseAlgorithm("ES256", -7, hashes.SHA256, 32),
    "secp384r1": CoseAlgorithm("ES384", -35, hashes.SHA384, 48),
    "secp521r1": CoseAlgorithm("ES512", -36, hashes.SHA512, 66),
}
_SUPPORTED: Final = "an EC key on P-256, P-384 or P-521"


# ---------------------------------------------------------------------------------------------
# CBOR encoding, byte for byte as serde_cbor/ciborium write eif_build's structures


def _head(major: int, n: int) -> bytes:
    top = major << 5
    if n < 24:
        return bytes([top | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([top | extra]) + n.to_bytes(width, "big")
    msg = f"CBOR length {n} is too large"
    raise ValueError(msg)


def _uint(n: int) -> bytes:
    return _head(0, n)


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


def _tstr(text: str) -> bytes:
    data = text.encode("utf-8")
    return _head(3, len(data)) + data


def _uint_array(data: bytes) -> bytes:
    """serde's ``Vec<u8>``: an array with one unsigned integer per byte."""
    return _head(4, len(data)) + b"".join(_UINT_BYTES[b] for b in data)


_UINT_BYTES: Final = tuple(_uint(b) for b in range(256))


def protected_header(algorithm: CoseAlgorithm) -> bytes:
    """``{1: alg}`` encoded, e.g. ``a1 01 38 22`` for ES384."""
    alg = algorithm.alg
    value = _uint(alg) if alg >= 0 else _head(1, -1 - alg)
    return _head(5, 1) + _uint(1) + value


def pcr_payload(register_value: bytes, register_index: int = 0) -> bytes:
    """The signed ``PcrInfo`` map."""
    return (
        _head(5, 2)
        + _tstr(KEY_INDEX)
        + _uint(register_index)
        + _tstr(KEY_VALUE)
        + _uint_array(register_value)
    )


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The COSE Sig_structure (RFC 8152 §4.4) that is actually signed."""
    return _head(4, 4) + _tstr(SIG_CONTEXT) + _bstr(protected) + _bstr(b"") + _bstr(payload)


def cose_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    """Untagged COSE_Sign1 with an empty unprotected map, as aws-nitro-enclaves-cose writes it."""
    return _head(4, 4) + _bstr(protected) + _head(5, 0) + _bstr(payload) + _bstr(signature)


def signature_section(certificate_pem: bytes, cose: bytes) -> bytes:
    """The section data: a one-element array holding the certificate and the COSE_Sign1."""
    return (
        _head(4, 1)
        + _head(5, 2)
        + _tstr(KEY_CERT)
        + _uint_array(certificate_pem)
        + _tstr(KEY_SIGNATURE)
        + _uint_array(cose)
    )


# ---------------------------------------------------------------------------------------------
# Certificates and keys


def load_certificate(pem: bytes) -> x509.Certificate:
    """The first PEM certificate in ``pem``; ValueError if there is none or it does not parse."""
    return x509.load_pem_x509_certificate(pem)


def cose_algorithm(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> CoseAlgorithm:
    try:
        return COSE_ALGORITHMS[key.curve.name]
    except KeyError:
        msg = f"EC curve {key.curve.name} is not supported: expected {_SUPPORTED}"
        raise SigningError(msg) from None


def certificate_pcr(certificate: x509.Certificate, algo: HashAlgo = DEFAULT_ALGO) -> str:
    """PCR8: the extend of H(DER of the signing certificate)."""
    return measure_bytes(certificate.public_bytes(serialization.Encoding.DER), algo)


def validity_problem(certificate: x509.Certificate, now: datetime | None = None) -> str | None:
    """Why ``certificate`` is not valid at ``now`` (default: the current time), or None."""
    moment = now or datetime.now(timezone.utc)
    if moment > certificate.not_valid_after_utc:
        return f"certificate expired on {certificate.not_valid_after_utc.isoformat()}"
    if moment < certificate.not_valid_before_utc:
        return f"certificate is not valid before {certificate.not_valid_before_utc.isoformat()}"
    return None


@dataclass(frozen=True)
class Signer:
    """A signing certificate (kept as the PEM bytes read, which go into the EIF) and its EC key."""

    certificate_pem: bytes
    certificate: x509.Certificate = field(repr=False)
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    @property
    def algorithm(self) -> CoseAlgorithm:
        return cose_algorithm(self.key)

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path, *, now: datetime | None = None) -> Signer:
        """Load and check a PEM certificate and a PEM EC private key (SEC1 or PKCS#8, unencrypted).

        Rejects non-EC keys, curves other than P-256/P-384/P-521, a key that does not belong to the
        certificate, and a certificate that is expired or not yet valid at ``now``.
        """
        cert_pem = _read(certificate, "signing certificate")
        try:
            cert = load_certificate(cert_pem)
        except ValueError:
            msg = f"{certificate}: not a PEM X.509 certificate"
            raise SigningError(msg) from None
        key = _load_private_key(private_key)
        cose_algorithm(key)  # rejects curves COSE has no ES* algorithm for
        cert_key = cert.public_key()
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or cert_key.public_numbers() != (
            key.public_key().public_numbers()
        ):
            msg = f"{private_key}: the private key does not match the certificate {certificate}"
            raise SigningError(msg)
        problem = validity_problem(cert, now)
        if problem:
            msg = f"{certificate}: {problem}"
            raise SigningError(msg)
        return cls(cert_pem, cert, key)

    def sign(self, pcr0: bytes) -> bytes:
        """The COSE_Sign1 over ``PcrInfo(0, pcr0)``, with RFC 6979 deterministic nonces."""
        algorithm = self.algorithm
        protected = protected_header(algorithm)
        payload = pcr_payload(pcr0)
        der = self.key.sign(
            sig_structure(protected, payload),
            ec.ECDSA(algorithm.hash(), deterministic_signing=True),
        )
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(algorithm.size, "big") + s.to_bytes(algorithm.size, "big")
        return cose_sign1(protected, payload, raw)

    def section(self, pcr0: bytes) -> bytes:
        """The signature section data for an image whose PCR0 is ``pcr0``."""
        data = signature_section(self.certificate_pem, self.sign(pcr0))
        if len(data) > SIGNATURE_MAX_SIZE:
            msg = (
                f"signature section would be {len(data)} bytes, over the {SIGNATURE_MAX_SIZE}-byte limit: "
                "use a certificate file without a chain"
            )
            raise SigningError(msg)
        return data

    def pcr8(self, algo: HashAlgo = DEFAULT_ALGO) -> str:
        return certificate_pcr(self.certificate, algo)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read {what}: {exc.strerror}"
        raise SigningError(msg) from None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if str(path).startswith("arn:"):
        msg = f"{path}: KMS keys are not supported: expected a PEM file with {_SUPPORTED}"
        raise SigningError(msg)
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        msg = f"{path}: the private key is password-protected: expected an unencrypted PEM key"
        raise SigningError(msg) from None
    except (ValueError, UnsupportedAlgorithm):
        msg = f"{path}: not a PEM private key"
        raise SigningError(msg) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        msg = f"{path}: {kind} keys are not supported: expected {_SUPPORTED}"
        raise SigningError(msg)
    return key


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
        return f"signing certificate has an unsupported key type: expected {_SUPPORTED}"
    algorithm = COSE_ALGORITHMS[key.curve.name]
    if info.alg != algorithm.alg:
        return (
            f"COSE algorithm {info.alg} does not match the certificate's {key.curve.name} key "
            f"(expected {algorithm.alg}, {algorithm.name})"
        )
    if not _signature_valid(key, algorithm, info):
        return "signature does not verify with the signing certificate's public key"
    return None


def _signature_valid(key: ec.EllipticCurvePublicKey, algorithm: CoseAlgorithm, info: SignatureInfo) -> bool:
    size = algorithm.size
    if len(info.signature) != 2 * size:
        return False
    r = int.from_bytes(info.signature[:size], "big")
    s = int.from_bytes(info.signature[size:], "big")
    with contextlib.suppress(InvalidSignature, ValueError):
        key.verify(
            encode_dss_signature(r, s),
            sig_structure(info.protected, info.payload),
            ec.ECDSA(algorithm.hash()),
        )
        return True
    return False


def describe_certificate(certificate: x509.Certificate) -> dict[str, JsonValue]:
    """nitro-cli describe-eif's ``SigningCertificate`` object (it describes the issuer)."""
    issuer: dict[str, JsonValue] = {}
    for attribute in certificate.issuer:
        issuer[_long_name(attribute.oid)] = _rust_debug(_attribute_text(attribute.value))
    return {
        "IssuerName": dict(sorted(issuer.items())),
        "Algorithm": _long_name(certificate.signature_algorithm_oid),
        "NotBefore": _asn1_time(certificate.not_valid_before_utc),
        "NotAfter": _asn1_time(certificate.not_valid_after_utc),
        "Signature": ":".join(f"{b:02X}" for b in certificate.signature),
    }


def _long_name(oid: x509.ObjectIdentifier) -> str:
    name = oid._name  # cryptography's names are OpenSSL's long names
    return name if name and name != "Unknown OID" else oid.dotted_string


def _attribute_text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", errors="replace")


def _rust_debug(text: str) -> str:
    """Rust's ``{:?}`` of a str with every ``"`` removed, as nitro-cli renders issuer values."""
    out = []
    for ch in text:
        if ch in _RUST_ESCAPES:
            out.append(_RUST_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    return "".join(out).replace('"', "")


_RUST_ESCAPES: Final = {"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n", "\0": "\\0"}


def _asn1_time(moment: datetime) -> str:
    """OpenSSL's ASN1_TIME_print: ``Jan  1 00:00:00 2024 GMT``."""
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S} {moment.year} GMT"
