"""Signing: eif_build's CBOR layout, deterministic COSE signatures, key checks, re-signing."""

from __future__ import annotations

import hashlib
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from eifbuild import cli
from eifbuild.eif import EifMetadata, SectionType, describe, measure, read_eif, sign_eif, verify
from eifbuild.eif._cose import (
    COSE_ALGORITHMS,
    SignatureInfo,
    cose_sign1,
    decode_signature_section,
    pcr_payload,
    protected_header,
    signature_section,
)
from eifbuild.eif.reader import read_section
from eifbuild.eif.sign import PemSigner
from eifbuild.eif.writer import SectionSource, write_eif, write_sections
from eifbuild.errors import SigningError
from eifbuild.util.cbor import sig_structure

Capture = pytest.CaptureFixture[str]
NOW = datetime.now(timezone.utc)

# Spec §11.5: the signed worked example (deterministic key, self-signed certificate).
DEMO_CERT = b"""-----BEGIN CERTIFICATE-----
MIIBkTCCARagAwIBAgIBATAKBggqhkjOPQQDAzAzMQswCQYDVQQGEwJVUzERMA8G
A1UECgwIRGVtbyBPcmcxETAPBgNVBAMMCGVpZi1kZW1vMB4XDTI0MDEwMTAwMDAw
MFoXDTM0MDEwMTAwMDAwMFowMzELMAkGA1UEBhMCVVMxETAPBgNVBAoMCERlbW8g
T3JnMREwDwYDVQQDDAhlaWYtZGVtbzB2MBAGByqGSM49AgEGBSuBBAAiA2IABJCQ
8oWu7ufjbwsRfa2wEqUeZ/YtDyy/nk61kf1kjq3BZ1NkVPfR2nayWeElFgEa7d8S
nH0Y0WtQpGCPgx3JR0VgktZMTRDJYvHZvSDMcrmSNmNtSoFj59tNSdwMcWoL6zAK
BggqhkjOPQQDAwNpADBmAjEAthsLSwtnkRZYKd5MicYrwOSsFZwZ9DFR0YVCWMzb
mdLqivsKJOdwYKPtHtCxsU6EAjEA/JHTlDK5fw/4VNZTW4HUniKvU3uQouRBW5VP
bvwd5VdRj0DpfCVVejI+Tp+1KFWi
-----END CERTIFICATE-----
"""
P384_ORDER = (
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
)
DEMO_METADATA = EifMetadata("demo", "1.0", "1970-01-01T00:00:00+00:00")


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
    *,
    cn: str = "eifbuild-test",
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=365),
) -> bytes:
    name = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _signer_files(
    tmp_path: Path, curve: ec.EllipticCurve, name: str = "s", **cert_args: datetime
) -> tuple[Path, Path]:
    key = ec.derive_private_key(int.from_bytes(hashlib.sha256(name.encode()).digest(), "big"), curve)
    cert, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(_cert(key, cn=name, **cert_args))
    key_file.write_bytes(_pem_key(key))
    return cert, key_file


def _inputs(tmp_path: Path) -> dict[str, Path]:
    files = {"kernel": b"KERNEL", "rd0": b"RD0", "rd1": b"RD1-app"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


def _write(tmp_path: Path, out: Path, signer: PemSigner | None, algo: str = "sha384") -> None:
    f = _inputs(tmp_path)
    write_eif(
        out, kernel=f["kernel"], cmdline="console=ttyS0", ramdisks=[f["rd0"], f["rd1"]], metadata=DEMO_METADATA,
        arch="x86_64", signer=signer, algo=algo,  # type: ignore[arg-type]
    )  # fmt: skip


def _assert_cose_verifies(info: SignatureInfo) -> None:
    """Verify with cryptography directly, independent of eifbuild's verifier."""
    key = info.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    algorithm = COSE_ALGORITHMS[key.curve.name]
    size = algorithm.size
    r, s = int.from_bytes(info.signature[:size], "big"), int.from_bytes(info.signature[size:], "big")
    message = sig_structure(info.protected, info.payload)
    key.verify(encode_dss_signature(r, s), message, ec.ECDSA(algorithm.hash()))


# ---------------------------------------------------------------------------------------------
# CBOR layout


def test_upstream_cbor_vectors() -> None:
    # aws-nitro-enclaves-image-format's own test vectors (spec §6.1, §6.2)
    payload = pcr_payload(bytes(range(48)))
    assert payload.hex() == (
        "a26e72656769737465725f696e646578006e72656769737465725f76616c7565983000010203040506070809"
        "0a0b0c0d0e0f101112131415161718181819181a181b181c181d181e181f1820182118221823182418251826"
        "182718281829182a182b182c182d182e182f"
    )
    cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    section = signature_section(cert, bytes.fromhex("d28444a1013822a04040"))
    assert section.hex().startswith("81a2737369676e696e675f6365727469666963617465983b182d")
    assert section.hex().endswith("0a697369676e61747572658a18d21884184418a1011838182218a018401840")
    assert cbor2.loads(section) == [
        {"signing_certificate": list(cert), "signature": list(bytes.fromhex("d28444a1013822a04040"))}
    ]


def test_worked_example_signed_bit_for_bit(tmp_path: Path) -> None:
    key = ec.derive_private_key(
        int.from_bytes(hashlib.sha384(b"eif-spec demo key").digest(), "big") % P384_ORDER, ec.SECP384R1()
    )
    (tmp_path / "cert.pem").write_bytes(DEMO_CERT)
    (tmp_path / "key.pem").write_bytes(_pem_key(key))
    # the example certificate is valid 2024-2034: check it at a fixed time so the test never expires
    signer = PemSigner.from_files(
        tmp_path / "cert.pem", tmp_path / "key.pem", now=datetime(2025, 1, 1, tzinfo=timezone.utc)
    )
    out = tmp_path / "signed.eif"
    _write(tmp_path, out, signer)
    data = out.read_bytes()
    assert len(data) == 2580
    assert data[544:548] == bytes.fromhex("7fb9b27c")
    assert data[875:887] == bytes.fromhex("0004 0000 000000000000069d")
    image = read_eif(out)
    assert [s.size for s in image.sections] == [6, 13, 238, 3, 7, 1693]
    assert image.signature is not None
    assert len(image.signature.cose) == 235
    assert image.signature.signature.hex().startswith("d3b45c61719b")
    assert image.signature.signature.hex().endswith("a83c34e636")
    assert measure(out).pcr8 == (
        "d653ed7351270462df7b1001e2306fa45e4a327bab833eb2a4015d6bc20986436b1ad8d10ae45bb37a5affd07e30cf77"
    )
    shown = describe(out)
    assert shown["SigningCertificate"] == {
        "IssuerName": {"commonName": "eif-demo", "countryName": "US", "organizationName": "Demo Org"},
        "Algorithm": "ecdsa-with-SHA384",
        "NotBefore": "Jan  1 00:00:00 2024 GMT",
        "NotAfter": "Jan  1 00:00:00 2034 GMT",
        "Signature": "30:66:02:31:00:B6:1B:0B:4B:0B:67:91:16:58:29:DE:4C:89:C6:2B:C0:E4:AC:15:9C:19:F4:31:51:D1:85:42:"
        "58:CC:DB:99:D2:EA:8A:FB:0A:24:E7:70:60:A3:ED:1E:D0:B1:B1:4E:84:02:31:00:FC:91:D3:94:32:B9:7F:0F:F8:54:"
        "D6:53:5B:81:D4:9E:22:AF:53:7B:90:A2:E4:41:5B:95:4F:6E:FC:1D:E5:57:51:8F:40:E9:7C:25:55:7A:32:3E:4E:9F:"
        "B5:28:55:A2",
    }
    assert list(shown) == [
        "EifVersion", "Measurements", "IsSigned", "SigningCertificate", "CheckCRC", "SignatureCheck",
        "ImageName", "ImageVersion", "Metadata",
    ]  # fmt: skip
    assert shown["SignatureCheck"] is True


def test_issuer_and_dates_match_openssl(tmp_path: Path) -> None:
    cert, key = _signer_files(tmp_path, ec.SECP384R1(), "openssl-oracle")
    out = tmp_path / "s.eif"
    _write(tmp_path, out, PemSigner.from_files(cert, key))
    shown = describe(out)["SigningCertificate"]
    assert isinstance(shown, dict)
    decoded = ssl._ssl._test_decode_cert(str(cert))  # type: ignore[attr-defined]  # OpenSSL's own rendering
    assert shown["IssuerName"] == {k: v for rdn in decoded["issuer"] for k, v in rdn}
    assert (shown["NotBefore"], shown["NotAfter"]) == (decoded["notBefore"], decoded["notAfter"])


# ---------------------------------------------------------------------------------------------
# Deterministic signatures, curves, algorithms


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_signing_is_deterministic_and_verifies(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    files = _signer_files(tmp_path, curve)
    first, second = tmp_path / "a.eif", tmp_path / "b.eif"
    _write(tmp_path, first, PemSigner.from_files(*files))
    _write(tmp_path, second, PemSigner.from_files(*files))  # a fresh signer: no state carried over
    assert first.read_bytes() == second.read_bytes()
    image = read_eif(first)
    assert image.signature is not None
    algorithm = COSE_ALGORITHMS[curve.name]
    assert image.signature.alg == algorithm.alg
    assert len(image.signature.signature) == 2 * algorithm.size
    assert image.signature.register_value.hex() == measure(first).pcr0
    _assert_cose_verifies(image.signature)
    assert verify(first) == []
    assert describe(first)["SignatureCheck"] is True


def test_sha256_algo_signs_the_sha256_pcr0(tmp_path: Path) -> None:
    out = tmp_path / "s.eif"
    _write(tmp_path, out, PemSigner.from_files(*_signer_files(tmp_path, ec.SECP384R1())), algo="sha256")
    image = read_eif(out)
    assert image.signature is not None
    assert image.signature.register_value.hex() == measure(out, "sha256").pcr0
    assert verify(out) == []
    assert describe(out, algo="sha256")["SignatureCheck"] is True


# ---------------------------------------------------------------------------------------------
# Rejected keys and certificates


def _rejection(tmp_path: Path, cert: bytes, key: bytes) -> str:
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    with pytest.raises(SigningError) as err:
        PemSigner.from_files(tmp_path / "c.pem", tmp_path / "k.pem")
    return str(err.value)


def test_rejects_rsa_and_ed25519_keys(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    message = _rejection(tmp_path, _cert(rsa_key), _pem_key(rsa_key))
    assert (
        message
        == f"{tmp_path / 'k.pem'}: RSA keys are not supported: expected an EC key on P-256, P-384 or P-521"
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    message = _rejection(tmp_path, _cert(ed_key), _pem_key(ed_key))
    assert (
        message
        == f"{tmp_path / 'k.pem'}: Ed25519 keys are not supported: expected an EC key on P-256, P-384 or P-521"
    )


def test_rejects_other_curves(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    assert _rejection(tmp_path, _cert(key), _pem_key(key)) == (
        "EC curve secp256k1 is not supported: expected an EC key on P-256, P-384 or P-521"
    )


def test_rejects_key_that_does_not_match_the_certificate(tmp_path: Path) -> None:
    key, other = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    assert _rejection(tmp_path, _cert(key), _pem_key(other)) == (
        f"{tmp_path / 'k.pem'}: the private key does not match the certificate {tmp_path / 'c.pem'}"
    )


def test_rejects_expired_and_future_certificates(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    expired = _cert(
        key,
        not_before=datetime(2020, 1, 1, tzinfo=timezone.utc),
        not_after=datetime(2021, 1, 1, tzinfo=timezone.utc),
    )
    assert _rejection(tmp_path, expired, _pem_key(key)) == (
        f"{tmp_path / 'c.pem'}: certificate expired on 2021-01-01T00:00:00+00:00"
    )
    future = _cert(
        key,
        not_before=datetime(2200, 1, 1, tzinfo=timezone.utc),
        not_after=datetime(2201, 1, 1, tzinfo=timezone.utc),
    )
    assert _rejection(tmp_path, future, _pem_key(key)) == (
        f"{tmp_path / 'c.pem'}: certificate is not valid before 2200-01-01T00:00:00+00:00"
    )


def test_rejects_unusable_files(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _cert(key)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    k = tmp_path / "k.pem"
    assert _rejection(tmp_path, cert, encrypted) == (
        f"{k}: the private key is password-protected: expected an unencrypted PEM key"
    )
    assert _rejection(tmp_path, cert, b"garbage") == f"{k}: not a PEM private key"
    assert (
        _rejection(tmp_path, b"garbage", _pem_key(key))
        == f"{tmp_path / 'c.pem'}: not a PEM X.509 certificate"
    )
    (tmp_path / "c.pem").write_bytes(cert)
    with pytest.raises(SigningError, match=r"cannot read private key: No such file or directory$"):
        PemSigner.from_files(tmp_path / "c.pem", tmp_path / "missing.pem")


def test_signer_never_shows_the_key(tmp_path: Path) -> None:
    cert, key = _signer_files(tmp_path, ec.SECP384R1())
    signer = PemSigner.from_files(cert, key)
    secret = key.read_bytes()
    assert "PRIVATE" not in repr(signer)
    assert secret.decode() not in repr(signer)


def test_cli_pack_rejects_bad_key_with_exit_2(tmp_path: Path, capsys: Capture) -> None:
    f = _inputs(tmp_path)
    rsa_key = rsa.generate_private_key(65537, 2048)
    (tmp_path / "c.pem").write_bytes(_cert(rsa_key))
    (tmp_path / "k.pem").write_bytes(_pem_key(rsa_key))
    args = ["pack", "--kernel", str(f["kernel"]), "--cmdline", "c", "--ramdisk", str(f["rd0"])]
    args += ["--output", str(tmp_path / "o.eif"), "--signing-certificate", str(tmp_path / "c.pem")]
    assert cli.main([*args, "--private-key", str(tmp_path / "k.pem")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {tmp_path / 'k.pem'}: RSA keys are not supported: expected an EC key on P-256, P-384 or P-521\n"
    )
    assert "PRIVATE" not in err
    assert not (tmp_path / "o.eif").exists()


# ---------------------------------------------------------------------------------------------
# verify finds signature problems


def _replace_signature(source: Path, section: bytes, out: Path) -> None:
    """Copy ``source`` with its signature section replaced by ``section`` (no re-signing)."""
    image = read_eif(source)
    kept = [SectionSource(s.type, s.size, path=source, offset=s.data_offset) for s in image.sections[:-1]]
    with out.open("wb") as fh:
        write_sections(fh, [*kept, SectionSource.from_bytes(SectionType.SIGNATURE, section)], flags=0)


def test_verify_reports_expiry_tampering_and_bad_signatures(tmp_path: Path) -> None:
    out = tmp_path / "s.eif"
    _write(tmp_path, out, PemSigner.from_files(*_signer_files(tmp_path, ec.SECP384R1())))
    image = read_eif(out)
    info = image.signature
    assert info is not None
    expiry = info.certificate.not_valid_after_utc
    assert verify(out, now=expiry + timedelta(days=1)) == [
        f"signing certificate expired on {expiry.isoformat()}"
    ]

    data = bytearray(out.read_bytes())
    data[image.ramdisks[1].data_offset] ^= 0xFF  # PCR0 changes: the signature covers another image
    tampered = tmp_path / "t.eif"
    tampered.write_bytes(bytes(data))
    problems = verify(tampered)
    assert problems[0].startswith("CRC mismatch")
    assert problems[1:] == [
        f"signed PCR0 {info.register_value.hex()} does not match the image's PCR0 {measure(tampered).pcr0}"
    ]
    assert describe(tampered)["SignatureCheck"] is False

    forged = bytearray(info.signature)
    forged[10] ^= 0x01
    bad = tmp_path / "b.eif"
    _replace_signature(
        out,
        signature_section(info.certificate_pem, cose_sign1(info.protected, info.payload, bytes(forged))),
        bad,
    )
    assert verify(bad) == ["signature does not verify with the signing certificate's public key"]
    assert describe(bad)["SignatureCheck"] is False

    es256 = protected_header(COSE_ALGORITHMS["secp256r1"])
    _replace_signature(
        out, signature_section(info.certificate_pem, cose_sign1(es256, info.payload, info.signature)), bad
    )
    assert verify(bad) == [
        "COSE algorithm -7 does not match the certificate's secp384r1 key (expected -35, ES384)"
    ]


def test_verify_flags_non_canonical_signature_layout(tmp_path: Path) -> None:
    out = tmp_path / "s.eif"
    _write(tmp_path, out, PemSigner.from_files(*_signer_files(tmp_path, ec.SECP384R1())))
    info = read_eif(out).signature
    assert info is not None
    swapped = cbor2.dumps([{"signature": list(info.cose), "signing_certificate": list(info.certificate_pem)}])
    other = tmp_path / "swapped.eif"
    _replace_signature(out, swapped, other)
    assert verify(other) == [
        "signature section is not in eif_build's CBOR layout (QEMU and the hypervisor expect it)"
    ]


# ---------------------------------------------------------------------------------------------
# sign: add or replace a signature


def test_cli_sign_adds_then_replaces_with_a_different_length(tmp_path: Path, capsys: Capture) -> None:
    unsigned = tmp_path / "u.eif"
    _write(tmp_path, unsigned, None)
    before = measure(unsigned)
    c384, k384 = _signer_files(tmp_path, ec.SECP384R1(), "p384")
    c256, k256 = _signer_files(tmp_path, ec.SECP256R1(), "p256-with-a-longer-common-name")
    signed = tmp_path / "s.eif"
    args = ["sign", str(unsigned), "--output", str(signed)]
    assert cli.main([*args, "--signing-certificate", str(c384), "--private-key", str(k384)]) == 0
    assert read_eif(unsigned).signature is None  # --output leaves the input alone
    first = read_eif(signed)
    assert [s.type for s in first.sections][-1] == SectionType.SIGNATURE
    assert measure(signed).pcrs() | {"PCR8": ""} == before.pcrs() | {"PCR8": ""}
    # re-sign in place with a P-256 certificate: the section changes size, the header must follow
    assert (
        cli.main(["sign", str(signed), "--signing_certificate", str(c256), "--private_key", str(k256)]) == 0
    )
    second = read_eif(signed)
    assert len(second.sections) == len(first.sections)
    assert second.sections[-1].size != first.sections[-1].size
    assert second.header.sizes[len(second.sections) - 1] == second.sections[-1].size
    assert second.signature is not None
    assert second.signature.alg == COSE_ALGORITHMS["secp256r1"].alg
    assert verify(signed) == []
    assert measure(signed).pcr0 == before.pcr0
    printed = capsys.readouterr().out
    assert printed.count('"PCR8"') == 2
    assert f'"PCR8": "{measure(signed).pcr8}"' in printed


def test_sign_eif_matches_signing_while_packing(tmp_path: Path) -> None:
    signer = PemSigner.from_files(*_signer_files(tmp_path, ec.SECP384R1()))
    packed, resigned = tmp_path / "p.eif", tmp_path / "r.eif"
    _write(tmp_path, packed, signer)
    _write(tmp_path, resigned, None)
    assert sign_eif(resigned, signer) == measure(packed)
    assert resigned.read_bytes() == packed.read_bytes()


def test_signature_section_roundtrip(tmp_path: Path) -> None:
    out = tmp_path / "s.eif"
    _write(tmp_path, out, PemSigner.from_files(*_signer_files(tmp_path, ec.SECP521R1())))
    image = read_eif(out)
    raw = read_section(image, image.sections[-1])
    info = decode_signature_section(raw)
    assert info.canonical
    assert signature_section(info.certificate_pem, info.cose) == raw
