"""Signing with AWS KMS keys through a real HTTP endpoint: moto in server mode on 127.0.0.1."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from s3_helpers import MotoServer
from signing_helpers import assert_refused, certificate_for, pack_args, unsigned_eif, verify_ok

from eifbuild import cli
from eifbuild.eif import measure

if TYPE_CHECKING:
    from pathlib import Path

boto3 = pytest.importorskip("boto3")
pytestmark = pytest.mark.slow
Capture = pytest.CaptureFixture[str]
REGION = "eu-central-1"


@pytest.fixture
def kms(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A KMS client for moto; throw-away credentials, and eifbuild's boto3 finds moto the same way."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return boto3.session.Session().client("kms", region_name=REGION)


def _key(kms: Any, spec: str = "ECC_NIST_P384", usage: str = "SIGN_VERIFY", **extra: Any) -> str:
    return str(kms.create_key(KeySpec=spec, KeyUsage=usage, **extra)["KeyMetadata"]["Arn"])


def _cert_for_key(kms: Any, arn: str, path: Path) -> Path:
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=arn)["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return certificate_for(public, path)


def _other_cert(path: Path) -> Path:
    return certificate_for(ec.generate_private_key(ec.SECP384R1()).public_key(), path)


def test_sign_and_pack_with_a_kms_key(kms: Any, tmp_path: Path, capsys: Capture) -> None:
    arn = _key(kms)
    cert = _cert_for_key(kms, arn, tmp_path / "kms.crt")
    eif = unsigned_eif(tmp_path, capsys)
    unsigned = measure(eif)
    assert cli.main(["sign", str(eif), "--signing-certificate", str(cert), "--private-key", arn]) == 0
    assert json.loads(capsys.readouterr().out)["PCR0"] == unsigned.pcr0
    verify_ok(eif, capsys)
    packed = tmp_path / "packed.eif"
    args = [*pack_args(tmp_path, packed), "--signing-certificate", str(cert), "--private-key", arn]
    assert cli.main(args) == 0
    verify_ok(packed, capsys)
    # randomized ECDSA: other bytes, the same PCRs (PCR8 included)
    assert packed.read_bytes() != eif.read_bytes()
    assert measure(packed) == measure(eif)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"), "the KMS key is a ENCRYPT_DECRYPT key: signing needs"),
        (("RSA_3072", "SIGN_VERIFY"), "the KMS key is RSA_3072: expected ECC_NIST_P256, ECC_NIST_P384"),
        (("ECC_SECG_P256K1", "SIGN_VERIFY"), "the KMS key is ECC_SECG_P256K1: expected ECC_NIST_P256"),
    ],
)
def test_unusable_key_types_are_refused(
    kms: Any, tmp_path: Path, capsys: Capture, key: tuple[str, str], expected: str
) -> None:
    arn = _key(kms, *key)
    eif = unsigned_eif(tmp_path, capsys)
    args = [
        "sign",
        str(eif),
        "--signing-certificate",
        str(_other_cert(tmp_path / "c.crt")),
        "--private-key",
        arn,
    ]
    assert_refused(args, eif, capsys, f"error: {arn}: {expected}")


def test_disabled_denied_missing_and_mismatched_keys_are_refused(
    kms: Any, tmp_path: Path, capsys: Capture
) -> None:
    eif = unsigned_eif(tmp_path, capsys)

    def refused(arn: str, cert: Path, *expected: str) -> None:
        args = ["sign", str(eif), "--signing-certificate", str(cert), "--private-key", arn]
        assert_refused(args, eif, capsys, f"error: {arn}: ", *expected)

    disabled = _key(kms)
    cert = _cert_for_key(kms, disabled, tmp_path / "disabled.crt")
    kms.disable_key(KeyId=disabled.rsplit("/", 1)[-1])  # moto 5.2's DisableKey fails (500) on an ARN
    refused(disabled, cert, "the KMS key is Disabled, not Enabled")

    deny = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*"}],
    }
    denied = _key(kms, Policy=json.dumps(deny))
    refused(denied, _other_cert(tmp_path / "o.crt"), "KMS DescribeKey refused: AccessDeniedException")

    missing = f"arn:aws:kms:{REGION}:123456789012:key/00000000-0000-0000-0000-000000000000"
    refused(missing, _other_cert(tmp_path / "o.crt"), "KMS DescribeKey refused: NotFoundException")

    mismatched = _key(kms)
    refused(
        mismatched, _other_cert(tmp_path / "o.crt"), "the KMS key's public key does not match the certificate"
    )


def test_without_boto3_the_error_names_the_extra(
    kms: Any, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = _key(kms)
    cert = _cert_for_key(kms, arn, tmp_path / "kms.crt")
    eif = unsigned_eif(tmp_path, capsys)
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an install without the extra looks like
    args = ["sign", str(eif), "--signing-certificate", str(cert), "--private-key", arn]
    assert_refused(args, eif, capsys, "needs boto3: pip install 'eifbuild[kms]'")


def test_other_arns_are_not_kms_keys(tmp_path: Path, capsys: Capture) -> None:
    eif = unsigned_eif(tmp_path, capsys)
    arn = "arn:aws:acm:eu-central-1:123456789012:certificate/abc"
    args = [
        "sign",
        str(eif),
        "--signing-certificate",
        str(_other_cert(tmp_path / "o.crt")),
        "--private-key",
        arn,
    ]
    assert_refused(args, eif, capsys, f"error: {arn}: not an AWS KMS key ARN")
