"""Signing with a key on a PKCS#11 token: SoftHSM2, a real PKCS#11 implementation, in a temp dir."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from signing_helpers import assert_refused, certificate_for, pack_args, unsigned_eif, verify_ok
from softhsm_helpers import MODULE, PIN, Token

from eifbuild import cli
from eifbuild.eif import measure
from eifbuild.eif._sign_pkcs11 import parse_pkcs11_uri
from eifbuild.errors import SigningError

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("pkcs11")
Capture = pytest.CaptureFixture[str]


@pytest.fixture
def token(softhsm_token: Token) -> Token:
    return softhsm_token  # in-process signing: the session's one token (see conftest)


@pytest.mark.slow
def test_sign_and_pack_with_a_softhsm_key(
    token: Token, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = certificate_for(token.public_key, tmp_path / "hsm.crt")
    eif = unsigned_eif(tmp_path, capsys)
    unsigned = measure(eif)
    assert cli.main(["sign", str(eif), "--signing-certificate", str(cert), "--private-key", token.uri()]) == 0
    verify_ok(eif, capsys)
    assert measure(eif).pcr0 == unsigned.pcr0
    packed = tmp_path / "packed.eif"
    args = [*pack_args(tmp_path, packed), "--signing-certificate", str(cert)]
    monkeypatch.setenv("EIFBUILD_PKCS11_PIN", PIN)  # the other ways to give the PIN and the module
    monkeypatch.setenv("EIFBUILD_PKCS11_MODULE", str(MODULE))
    assert cli.main([*args, "--private-key", "pkcs11:token=eifbuild;id=%01"]) == 0
    verify_ok(packed, capsys)
    assert packed.read_bytes() != eif.read_bytes()  # randomized ECDSA
    assert measure(packed) == measure(eif)


@pytest.mark.slow
def test_wrong_pin_missing_token_key_and_module_are_refused(
    token: Token, tmp_path: Path, capsys: Capture
) -> None:
    cert = certificate_for(token.public_key, tmp_path / "hsm.crt")
    eif = unsigned_eif(tmp_path, capsys)

    def refused(uri: str, *expected: str) -> str:
        args = ["sign", str(eif), "--signing-certificate", str(cert), "--private-key", uri]
        return assert_refused(args, eif, capsys, *expected)

    wrong = tmp_path / "wrong-pin"
    wrong.write_text("0000-0000\n")
    err = refused(token.uri(**{"pin-source": f"file:{wrong}"}), "the token refused the PIN (wrong PIN)")
    assert "0000-0000" not in err
    refused(token.uri().replace("token=eifbuild", "token=absent"), "no such token in")
    refused(
        token.uri().replace("object=enclave-signing", "object=absent"), "no such private key on the token"
    )
    refused(token.uri(**{"module-path": ""}), "no PKCS#11 module: add module-path=")
    refused(token.uri(**{"module-path": "/nonexistent/module.so"}), "PKCS#11 error", "/nonexistent/module.so")
    refused(f"pkcs11:token=eifbuild;object=enclave-signing?module-path={MODULE}", "no PIN: add pin-source=")
    err = refused(
        f"pkcs11:token=eifbuild;object=enclave-signing?pin-value={PIN}", "pin-value is not accepted"
    )
    assert PIN not in err
    other = certificate_for(ec.generate_private_key(ec.SECP384R1()).public_key(), tmp_path / "other.crt")
    args = ["sign", str(eif), "--signing-certificate", str(other), "--private-key", token.uri()]
    assert_refused(args, eif, capsys, "the token's key does not match the certificate")


@pytest.mark.slow
def test_without_the_library_the_error_names_the_extra(
    token: Token, tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert = certificate_for(token.public_key, tmp_path / "hsm.crt")
    eif = unsigned_eif(tmp_path, capsys)
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # what an install without the extra looks like
    args = ["sign", str(eif), "--signing-certificate", str(cert), "--private-key", token.uri()]
    assert_refused(args, eif, capsys, "needs python-pkcs11: pip install 'eifbuild[pkcs11]'")


def test_uri_parsing() -> None:
    uri = parse_pkcs11_uri(
        "pkcs11:token=My%20HSM;id=%01%ff;type=private?pin-source=file:/run/pin&module-path=/m.so"
    )
    assert (uri.token, uri.key_id, uri.pin_source, uri.module_path) == (
        "My HSM",
        b"\x01\xff",
        "file:/run/pin",
        "/m.so",
    )
    for bad, message in [
        ("pkcs11:token=t", "name the key with object=LABEL or id="),
        ("pkcs11:token=t;object=k;type=public", "type=public: the signing key is the private key"),
        ("pkcs11:token=t;object=k;slot=3", "unknown PKCS#11 URI attribute 'slot'"),
        ("pkcs11:token=t;object", "'object' is not an attribute=value pair"),
        (
            "pkcs11:token=t;pin-value=1234;slot=3",
            "^PKCS#11 URI: pin-value is not accepted: use pin-source=FILE",
        ),
    ]:
        with pytest.raises(SigningError, match=message):
            parse_pkcs11_uri(bad)
