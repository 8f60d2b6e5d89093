"""Key specs: the one place that turns what a user names as the signing key (``--private-key``,
``[sign] key``) into a :class:`~eifbuild.eif.sign.Signer`.

- ``arn:aws:kms:…``: an AWS KMS key (:mod:`._sign_kms`, the ``kms`` extra);
- ``pkcs11:…``: an RFC 7512 URI naming a key on an HSM or token (:mod:`._sign_pkcs11`, the
  ``pkcs11`` extra);
- anything else: a PEM file holding an EC private key (:class:`~eifbuild.eif.sign.PemSigner`).

This module imports no crypto or SDK code until a signer is opened: the build's config reads
:func:`key_kind` at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from ..errors import SigningError

if TYPE_CHECKING:
    from datetime import datetime

    from .sign import Signer

KMS_PREFIX: Final = "arn:aws:kms:"
PKCS11_PREFIX: Final = "pkcs11:"
KeyKind = Literal["pem", "kms", "pkcs11"]


def key_kind(spec: str) -> KeyKind:
    """What ``spec`` names: a KMS key, a PKCS#11 object or (anything else) a PEM file."""
    if spec.startswith(KMS_PREFIX):
        return "kms"
    if spec.startswith(PKCS11_PREFIX):
        return "pkcs11"
    return "pem"


def signs_deterministically(spec: str) -> bool:
    """Whether an EIF signed with ``spec`` is the same bytes every time (KMS and HSMs randomize ECDSA)."""
    return key_kind(spec) == "pem"


def open_signer(certificate: Path, key: str, *, now: datetime | None = None) -> Signer:
    """The signer for ``key``, checked against ``certificate`` (which must be valid at ``now``)."""
    kind = key_kind(key)
    if kind == "pem":
        return _pem_signer(certificate, key, now)
    from .sign import load_signing_certificate  # noqa: PLC0415 - crypto only when signing

    cert = load_signing_certificate(certificate, now)
    if kind == "kms":
        from ._sign_kms import open_kms_signer  # noqa: PLC0415 - boto3 only for KMS keys

        return open_kms_signer(key, cert)
    from ._sign_pkcs11 import open_pkcs11_signer  # noqa: PLC0415 - the PKCS#11 library only for tokens

    return open_pkcs11_signer(key, cert)


def _pem_signer(certificate: Path, key: str, now: datetime | None) -> Signer:
    if key.startswith("arn:"):
        msg = f"{key}: not an AWS KMS key ARN (expected {KMS_PREFIX}REGION:ACCOUNT:key/ID or …:alias/NAME)"
        raise SigningError(msg)
    from .sign import PemSigner  # noqa: PLC0415 - crypto only when signing

    return PemSigner.from_files(certificate, Path(key), now=now)
