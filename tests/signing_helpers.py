"""Shared by the tests of keys held elsewhere (KMS, PKCS#11, detached): certificates for a public
key, an unsigned EIF made by ``eifbuild pack``, and the check that a refusal left the EIF alone."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eifbuild import cli

NOW = datetime.now(timezone.utc)


def certificate_for(public_key: ec.EllipticCurvePublicKey, path: Path, cn: str = "eifbuild-test") -> Path:
    """A certificate for ``public_key`` issued by a throw-away CA key, written to ``path``."""
    ca = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throw-away CA")]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .sign(ca, hashes.SHA384())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def pem_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def pack_args(tmp_path: Path, output: Path) -> list[str]:
    for name, data in {"kernel": b"KERNEL", "rd0": b"RD0", "rd1": b"RD1-app"}.items():
        (tmp_path / name).write_bytes(data)
    return [
        "pack", "--kernel", str(tmp_path / "kernel"), "--cmdline", "console=ttyS0",
        "--ramdisk", str(tmp_path / "rd0"), "--ramdisk", str(tmp_path / "rd1"), "--output", str(output),
    ]  # fmt: skip


def unsigned_eif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "image.eif"
    assert cli.main(pack_args(tmp_path, out)) == 0
    capsys.readouterr()
    return out


def verify_ok(eif: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``eifbuild verify`` finds nothing wrong (signature, signed PCR0, layout, certificate)."""
    capsys.readouterr()
    code = cli.main(["verify", str(eif)])
    assert capsys.readouterr().out == f"{eif}: OK\n"
    assert code == 0


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(args: list[str], eif: Path, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """The command exits 2 with one ``error:`` line holding ``expected``, and ``eif`` (and its
    directory) are as they were."""
    before, listing = digest(eif), sorted(p.name for p in eif.parent.iterdir())
    capsys.readouterr()
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    assert digest(eif) == before
    assert sorted(p.name for p in eif.parent.iterdir()) == listing  # no temp file left behind
    return err
