"""Who signs an EIF: the :class:`Signer` interface, the PEM signer, and the one path every signer's
signature takes into an EIF (:func:`signature_section_for`), which ends in the COSE check ``eifbuild
verify`` makes: a signature that does not verify is never written.

Signers: :class:`PemSigner` (a PEM key on this host; deterministic ECDSA per RFC 6979, so a signed
EIF is bit-for-bit reproducible), :mod:`._sign_kms` (AWS KMS), :mod:`._sign_pkcs11` (an HSM or token
through PKCS#11) and :mod:`.detached` (a signature made elsewhere); :mod:`.keyspec` picks one from
a key spec. KMS and HSM signatures are randomized ECDSA: their EIFs' bytes differ run to run while
PCR0/1/2 and PCR8 do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SigningError
from ..util.cbor import sig_structure
from ._cose import (
    SIGNATURE_MAX_SIZE,
    SUPPORTED_KEYS,
    CoseAlgorithm,
    cose_algorithm,
    cose_problem,
    cose_sign1,
    decode_signature_section,
    load_certificate,
    pcr_payload,
    protected_header,
    raw_signature,
    signature_section,
)
from .pcr import DEFAULT_ALGO, HashAlgo, measure_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography import x509

    from .metadata import JsonValue


# ---------------------------------------------------------------------------------------------
# The signing certificate


@dataclass(frozen=True)
class SigningCertificate:
    """A signing certificate: the PEM bytes as read (they go into the EIF) and where they came from."""

    pem: bytes
    parsed: x509.Certificate = field(repr=False)
    source: str

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.parsed.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            msg = f"{self.source}: the certificate's key is not supported: expected {SUPPORTED_KEYS}"
            raise SigningError(msg)
        return key

    @property
    def algorithm(self) -> CoseAlgorithm:
        return cose_algorithm(self.public_key)

    def matches(self, key: ec.EllipticCurvePublicKey) -> bool:
        return self.public_key.public_numbers() == key.public_numbers()

    def check_validity(self, now: datetime | None = None) -> None:
        problem = validity_problem(self.parsed, now)
        if problem:
            msg = f"{self.source}: {problem}"
            raise SigningError(msg)


def read_certificate(path: Path) -> SigningCertificate:
    """Read a PEM certificate (the first one in the file); SigningError if it cannot be used."""
    pem = read_file(path, "signing certificate")
    try:
        certificate = load_certificate(pem)
    except ValueError:
        msg = f"{path}: not a PEM X.509 certificate"
        raise SigningError(msg) from None
    return SigningCertificate(pem, certificate, str(path))


def load_signing_certificate(path: Path, now: datetime | None = None) -> SigningCertificate:
    """A certificate for a key held elsewhere: an EC key on a supported curve, valid at ``now``."""
    certificate = read_certificate(path)
    _ = certificate.algorithm  # refuses RSA keys and curves COSE has no ES* algorithm for
    certificate.check_validity(now)
    return certificate


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


# ---------------------------------------------------------------------------------------------
# Signers


class Signer(Protocol):
    """What signs the COSE Sig_structure: a key that belongs to ``certificate``, wherever it is."""

    @property
    def certificate(self) -> SigningCertificate: ...

    @property
    def name(self) -> str:
        """The key, for messages (a path, an ARN, a PKCS#11 URI without its PIN)."""
        ...

    @property
    def deterministic(self) -> bool:
        """Whether the same message always gets the same signature (RFC 6979)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """ECDSA over ``message`` with the certificate's algorithm's hash, as raw r‖s."""
        ...


@dataclass(frozen=True)
class PemSigner:
    """A certificate and its EC private key, read from PEM files on this host."""

    certificate: SigningCertificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    name: str
    deterministic: bool = True

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path, *, now: datetime | None = None) -> PemSigner:
        """Load and check a PEM certificate and a PEM EC private key (SEC1 or PKCS#8, unencrypted).

        Rejects non-EC keys, curves other than P-256/P-384/P-521, a key that does not belong to the
        certificate, and a certificate that is expired or not yet valid at ``now``.
        """
        cert = read_certificate(certificate)
        key = _load_private_key(private_key)
        cose_algorithm(key)  # rejects curves COSE has no ES* algorithm for
        cert_key = cert.parsed.public_key()
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or not cert.matches(key.public_key()):
            msg = f"{private_key}: the private key does not match the certificate {certificate}"
            raise SigningError(msg)
        cert.check_validity(now)
        return cls(cert, key, str(private_key))

    def sign(self, message: bytes) -> bytes:
        algorithm = self.certificate.algorithm
        der = self.key.sign(message, ec.ECDSA(algorithm.hash(), deterministic_signing=True))
        return raw_signature(der, algorithm)


def signature_section_for(signer: Signer, pcr0: bytes) -> bytes:
    """The signature section data for an image whose PCR0 is ``pcr0``, checked as ``verify`` would."""
    certificate = signer.certificate
    protected = protected_header(certificate.algorithm)
    payload = pcr_payload(pcr0)
    raw = signer.sign(sig_structure(protected, payload))
    data = signature_section(certificate.pem, cose_sign1(protected, payload, raw))
    if len(data) > SIGNATURE_MAX_SIZE:
        msg = (
            f"signature section would be {len(data)} bytes, over the {SIGNATURE_MAX_SIZE}-byte limit: "
            "use a certificate file without a chain"
        )
        raise SigningError(msg)
    problem = cose_problem(decode_signature_section(data))
    if problem:
        msg = (
            f"{signer.name}: the signature of PCR0 {pcr0.hex()} is refused ({problem}): "
            f"does the key belong to {certificate.source}? Nothing was written"
        )
        raise SigningError(msg)
    return data


def read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read {what}: {exc.strerror}"
        raise SigningError(msg) from None


def _load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    data = read_file(path, "private key")
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
        msg = f"{path}: {kind} keys are not supported: expected {SUPPORTED_KEYS}"
        raise SigningError(msg)
    return key


# ---------------------------------------------------------------------------------------------
# Describing the signer (nitro-cli describe-eif)


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
