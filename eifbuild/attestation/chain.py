"""Rule 2, chain: the document's certificates lead from AWS's Nitro Enclaves root to the leaf that
signed it, each valid at the time of verification. The root ships in the package (no network)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtensionOID

from ..errors import AttestationError, FileAccessError, InputError, first_line

if TYPE_CHECKING:
    from .document import AttestationDocument

AWS_ROOT_FILE: Final = "aws-nitro-enclaves-root-g1.pem"
AWS_ROOT_SHA256: Final = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
_KNOWN_CRITICAL: Final = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE}


def _refuse(code: str, detail: str) -> AttestationError:
    return AttestationError(f"chain.{code}", detail)


def aws_root_der() -> bytes:
    """AWS's Nitro Enclaves root G1 (DER), from the package, checked against its pinned SHA-256."""
    pem = resources.files(__package__).joinpath(AWS_ROOT_FILE).read_bytes()
    der = _pem_to_der(pem, AWS_ROOT_FILE)
    if hashlib.sha256(der).hexdigest() != AWS_ROOT_SHA256:
        msg = f"the packaged AWS root certificate is not the pinned one (SHA-256 {AWS_ROOT_SHA256})"
        raise InputError(msg, path=AWS_ROOT_FILE)
    return der


def load_root(path: str | Path) -> bytes:
    """A root certificate (PEM or DER file) to trust instead of AWS's, as DER."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read the root certificate: {exc.strerror}"
        raise FileAccessError(msg, path=path) from None
    return _pem_to_der(data, path) if b"-----BEGIN" in data else _check_der(data, path)


def _pem_to_der(pem: bytes, where: str | Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415

    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError as exc:
        msg = f"not a PEM certificate: {first_line(exc)}"
        raise InputError(msg, path=where) from None


def _check_der(der: bytes, where: str | Path) -> bytes:
    try:
        x509.load_der_x509_certificate(der)
    except ValueError as exc:
        msg = f"not a PEM or DER certificate: {first_line(exc)}"
        raise InputError(msg, path=where) from None
    return der


def check_chain(document: AttestationDocument, root_der: bytes, at: datetime) -> x509.Certificate:
    """The document's leaf certificate, once the chain from ``root_der`` to it holds at ``at``."""
    if document.cabundle[0] != root_der:
        got = hashlib.sha256(document.cabundle[0]).hexdigest()
        want = hashlib.sha256(root_der).hexdigest()
        msg = f"cabundle[0] is not the trusted root (SHA-256 {got}, expected {want})"
        raise _refuse("root", msg)
    ders = [*document.cabundle, document.certificate]
    names = [f"cabundle[{i}]" for i in range(len(document.cabundle))] + ["the leaf certificate"]
    certs = [_load(der, name) for der, name in zip(ders, names, strict=True)]
    for i in range(1, len(certs)):
        _check_issued(certs[i], certs[i - 1], names[i], names[i - 1])
    for depth, (cert, name) in enumerate(zip(certs[:-1], names[:-1], strict=True)):
        _check_ca(cert, name, below=len(certs) - 2 - depth)
    _check_leaf(certs[-1])
    for cert, name in zip(certs, names, strict=True):
        _check_time(cert, name, at)
    _check_timestamp(document, certs[-1], at)
    return certs[-1]


def _load(der: bytes, name: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.issuer, cert.subject, cert.not_valid_before_utc, cert.extensions)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise _refuse("certificate", f"{name} is not a DER certificate: {first_line(exc)}") from None
    for extension in cert.extensions:
        if extension.critical and extension.oid not in _KNOWN_CRITICAL:
            msg = f"{name} has an unknown critical extension {extension.oid.dotted_string}"
            raise _refuse("critical", msg)
    return cert


def _check_issued(cert: x509.Certificate, issuer: x509.Certificate, name: str, issuer_name: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except ValueError:
        msg = (
            f"{name} ({cert.subject.rfc4514_string()}) is not issued by {issuer_name} "
            f"({issuer.subject.rfc4514_string()}): issuer name or algorithm differs"
        )
        raise _refuse("issuer", msg) from None
    except (InvalidSignature, TypeError, UnsupportedAlgorithm):
        msg = f"{name}'s signature does not verify with {issuer_name}'s key"
        raise _refuse("issuer", msg) from None


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_ca(cert: x509.Certificate, name: str, *, below: int) -> None:
    """A CA: basic constraints CA (a path length, if any, allowing the ``below`` CAs under it) and
    keyCertSign."""
    constraints = _extension(cert, x509.BasicConstraints)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise _refuse("ca", f"{name} issues a certificate but its basic constraints do not make it a CA")
    if constraints.path_length is not None and below > constraints.path_length:
        msg = f"{name}'s path length {constraints.path_length} does not allow the {below} CAs under it"
        raise _refuse("ca", msg)
    usage = _extension(cert, x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.key_cert_sign:
        raise _refuse("ca", f"{name} issues a certificate but its key usage lacks keyCertSign")


def _check_leaf(cert: x509.Certificate) -> None:
    constraints = _extension(cert, x509.BasicConstraints)
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise _refuse("leaf", "the leaf certificate is a CA")
    usage = _extension(cert, x509.KeyUsage)
    if not isinstance(usage, x509.KeyUsage) or not usage.digital_signature:
        raise _refuse("leaf", "the leaf certificate's key usage lacks digitalSignature")


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_time(cert: x509.Certificate, name: str, at: datetime) -> None:
    if at < cert.not_valid_before_utc:
        msg = f"{name} is not valid before {_iso(cert.not_valid_before_utc)} (verifying as of {_iso(at)})"
        raise _refuse("not-yet-valid", msg)
    if at > cert.not_valid_after_utc:
        msg = f"{name} expired at {_iso(cert.not_valid_after_utc)} (verifying as of {_iso(at)})"
        raise _refuse("expired", msg)


def _check_timestamp(document: AttestationDocument, leaf: x509.Certificate, at: datetime) -> None:
    made = document.timestamp
    # certificate times have whole seconds; the document's has milliseconds
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc + timedelta(seconds=1)
    if not start <= made < end:
        msg = (
            f"the document's timestamp {made.isoformat()} is outside its leaf certificate's validity "
            f"({_iso(start)} to {_iso(leaf.not_valid_after_utc)})"
        )
        raise _refuse("timestamp", msg)
    if made > at:
        msg = f"the document's timestamp {made.isoformat()} is after the time verified as of, {_iso(at)}"
        raise _refuse("future", msg)
