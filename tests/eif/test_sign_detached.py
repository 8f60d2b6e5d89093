"""Detached signing: export the payload, sign it with openssl (not our code), attach, verify."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from signing_helpers import assert_refused, certificate_for, pem_key, unsigned_eif, verify_ok

from eifbuild import cli
from eifbuild.eif import measure

Capture = pytest.CaptureFixture[str]


def _key_and_cert(tmp_path: Path, curve: ec.EllipticCurve, name: str = "signer") -> tuple[Path, Path]:
    key = ec.generate_private_key(curve)
    return pem_key(key, tmp_path / f"{name}.key"), certificate_for(key.public_key(), tmp_path / f"{name}.crt")


def _export(eif: Path, out: Path, capsys: Capture, *extra: str) -> dict[str, str]:
    assert cli.main(["sign", "--export-payload", str(out), str(eif), *extra]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.with_name(out.name + ".json").read_text()) == printed
    return printed


def _openssl_sign(key: Path, payload: Path, out: Path) -> Path:
    openssl = require_tool("openssl")
    subprocess.run(
        [openssl, "dgst", "-sha384", "-sign", str(key), "-out", str(out), str(payload)], check=True
    )
    return out


@pytest.mark.parametrize("fmt", ["der", "raw"])
def test_export_sign_with_openssl_attach_verify(tmp_path: Path, capsys: Capture, fmt: str) -> None:
    eif = unsigned_eif(tmp_path, capsys)
    unsigned = measure(eif)
    key, cert = _key_and_cert(tmp_path, ec.SECP384R1())
    described = _export(eif, tmp_path / "payload.bin", capsys)
    assert described["cose_algorithm"] == "ES384"
    assert described["hash"] == "sha384"
    assert described["pcr0"] == unsigned.pcr0
    signature = _openssl_sign(key, tmp_path / "payload.bin", tmp_path / "sig.der")
    if fmt == "raw":
        r, s = decode_dss_signature(signature.read_bytes())
        signature = tmp_path / "sig.raw"
        signature.write_bytes(r.to_bytes(48, "big") + s.to_bytes(48, "big"))
    assert cli.main(["sign", "--signature", str(signature), "--certificate", str(cert), str(eif)]) == 0
    printed = json.loads(capsys.readouterr().out)
    signed = measure(eif)
    assert (signed.pcr0, signed.pcr1, signed.pcr2) == (unsigned.pcr0, unsigned.pcr1, unsigned.pcr2)
    assert printed["PCR8"] == signed.pcr8 is not None
    verify_ok(eif, capsys)


def test_digest_signed_with_openssl_pkeyutl_on_p521(tmp_path: Path, capsys: Capture) -> None:
    """Signers that take a digest use the one the JSON names; the curve follows the certificate."""
    openssl = require_tool("openssl")
    eif = unsigned_eif(tmp_path, capsys)
    key, cert = _key_and_cert(tmp_path, ec.SECP521R1())
    described = _export(eif, tmp_path / "payload.bin", capsys, "--certificate", str(cert))
    assert (described["cose_algorithm"], described["curve"], described["hash"]) == (
        "ES512",
        "P-521",
        "sha512",
    )
    (tmp_path / "digest.bin").write_bytes(bytes.fromhex(described["payload_sha512"]))
    subprocess.run(
        [openssl, "pkeyutl", "-sign", "-inkey", str(key), "-in", str(tmp_path / "digest.bin"),
         "-out", str(tmp_path / "sig.der")],
        check=True,
    )  # fmt: skip
    out = tmp_path / "signed.eif"
    args = ["sign", "--signature", str(tmp_path / "sig.der"), "--certificate", str(cert), str(eif)]
    assert cli.main([*args, "--output", str(out)]) == 0
    verify_ok(out, capsys)


def test_signature_of_other_bytes_is_refused_and_nothing_written(tmp_path: Path, capsys: Capture) -> None:
    eif = unsigned_eif(tmp_path, capsys)
    key, cert = _key_and_cert(tmp_path, ec.SECP384R1())
    _export(eif, tmp_path / "payload.bin", capsys)
    (tmp_path / "other.bin").write_bytes((tmp_path / "payload.bin").read_bytes() + b"\0")
    other = _openssl_sign(key, tmp_path / "other.bin", tmp_path / "other.sig")
    args = ["sign", "--signature", str(other), "--certificate", str(cert), str(eif)]
    assert_refused(
        args, eif, capsys, f"{other}: not an ES384 signature of this EIF's payload", "nothing was written"
    )
    # the right payload, but signed by a key that is not the certificate's
    stranger, _ = _key_and_cert(tmp_path, ec.SECP384R1(), "stranger")
    wrong_key = _openssl_sign(stranger, tmp_path / "payload.bin", tmp_path / "stranger.sig")
    args = ["sign", "--signature", str(wrong_key), "--certificate", str(cert), str(eif)]
    assert_refused(args, eif, capsys, "not an ES384 signature of this EIF's payload by the key of")
    (tmp_path / "garbage.sig").write_bytes(b"\x30\x01garbage")
    args = ["sign", "--signature", str(tmp_path / "garbage.sig"), "--certificate", str(cert), str(eif)]
    assert_refused(args, eif, capsys, "garbage.sig: not an ES384 signature")


def test_attach_needs_a_certificate(tmp_path: Path, capsys: Capture) -> None:
    eif = unsigned_eif(tmp_path, capsys)
    (tmp_path / "sig").write_bytes(b"x")
    assert_refused(
        ["sign", "--signature", str(tmp_path / "sig"), str(eif)], eif, capsys, "--signing-certificate"
    )
