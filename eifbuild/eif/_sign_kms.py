"""Signing with an AWS KMS key (``--private-key arn:aws:kms:…``, as eif_build and nitro-cli take it).

The key must be an asymmetric SIGN_VERIFY key on P-256, P-384 or P-521, enabled, and its public
key (KMS ``GetPublicKey``) must be the certificate's. The COSE Sig_structure is sent whole with
``MessageType=RAW`` (about 150 bytes, far below KMS's 4096-byte limit), so KMS hashes it as COSE
does. Credentials and the endpoint come from boto3's standard chain (``AWS_PROFILE``,
``AWS_ENDPOINT_URL``, …); the region from the ARN. boto3 is the optional ``kms`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SigningError, first_line
from ._cose import raw_signature

if TYPE_CHECKING:
    from collections.abc import Callable

    from .sign import SigningCertificate

# KMS key spec -> KMS's signing algorithm with COSE's hash for that curve
KMS_KEY_SPECS: Final = {
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
}
_EXTRA_HINT: Final = "pip install 'eifbuild[kms]'"


@dataclass(frozen=True)
class KmsSigner:
    """A KMS key that belongs to ``certificate``; each signature is one KMS ``Sign`` call."""

    certificate: SigningCertificate
    name: str  # the key's ARN
    signing_algorithm: str
    client: Any = field(repr=False)  # a boto3 KMS client
    deterministic: bool = False

    def sign(self, message: bytes) -> bytes:
        response = _call(
            self.name,
            self.client.sign,
            KeyId=self.name,
            Message=message,
            MessageType="RAW",
            SigningAlgorithm=self.signing_algorithm,
        )
        return raw_signature(response["Signature"], self.certificate.algorithm)


def open_kms_signer(arn: str, certificate: SigningCertificate) -> KmsSigner:
    """Check that ``arn`` is a usable signing key whose public key is ``certificate``'s."""
    client = _client(arn)
    metadata = _call(arn, client.describe_key, KeyId=arn)["KeyMetadata"]
    algorithm = _check_key(arn, metadata)
    public_der = _call(arn, client.get_public_key, KeyId=arn)["PublicKey"]
    public = serialization.load_der_public_key(public_der)
    if not isinstance(public, ec.EllipticCurvePublicKey) or not certificate.matches(public):
        msg = f"{arn}: the KMS key's public key does not match the certificate {certificate.source}"
        raise SigningError(msg)
    return KmsSigner(certificate, arn, algorithm, client)


def _check_key(arn: str, metadata: dict[str, Any]) -> str:
    """KMS's signing algorithm for the key ``metadata`` describes; SigningError if it cannot sign."""
    usage, spec, state = metadata.get("KeyUsage"), metadata.get("KeySpec"), metadata.get("KeyState")
    if usage != "SIGN_VERIFY":
        msg = f"{arn}: the KMS key is a {usage} key: signing needs an asymmetric SIGN_VERIFY key"
        raise SigningError(msg)
    if spec not in KMS_KEY_SPECS:
        msg = f"{arn}: the KMS key is {spec}: expected {', '.join(KMS_KEY_SPECS)}"
        raise SigningError(msg)
    if state != "Enabled":
        msg = f"{arn}: the KMS key is {state}, not Enabled"
        raise SigningError(msg)
    return KMS_KEY_SPECS[spec]


def _client(arn: str) -> Any:
    try:
        import boto3  # noqa: PLC0415 - an optional extra, only for KMS keys
    except ImportError:
        msg = f"{arn}: signing with an AWS KMS key needs boto3: {_EXTRA_HINT}"
        raise SigningError(msg) from None
    parts = arn.split(":")
    region = parts[3] if len(parts) > 5 else ""  # arn:aws:kms:REGION:ACCOUNT:key/ID
    if not region:
        msg = f"{arn}: not a KMS key ARN (expected arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME)"
        raise SigningError(msg)
    return boto3.session.Session().client("kms", region_name=region)


def _call(arn: str, operation: Callable[..., Any], **params: Any) -> Any:
    """One KMS call; every failure (refused, unreachable, no credentials) as one SigningError line."""
    import botocore.exceptions  # noqa: PLC0415 - installed with boto3

    try:
        return operation(**params)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code, text = error.get("Code", "error"), str(error.get("Message", "")).strip()
        detail = f": {text.splitlines()[0]}" if text else ""
        msg = f"{arn}: KMS {exc.operation_name} refused: {code}{detail}"
        raise SigningError(msg) from None
    except botocore.exceptions.NoCredentialsError:
        msg = f"{arn}: no AWS credentials (boto3 looks in AWS_* variables, ~/.aws and the instance role)"
        raise SigningError(msg) from None
    except botocore.exceptions.BotoCoreError as exc:
        msg = f"{arn}: KMS call failed: {first_line(exc)}"
        raise SigningError(msg) from None
