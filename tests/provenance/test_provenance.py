"""The provenance package without a build: DSSE envelopes checked by securesystemslib (PEM and a
SoftHSM2 key through the same Signer), the statement's shape, and `kms-policy`."""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from signing_helpers import certificate_for, pem_key
from softhsm_helpers import Token

from eifbuild import cli
from eifbuild.eif import open_signer
from eifbuild.errors import ProvenanceError
from eifbuild.provenance import (
    BuildFacts,
    Dependency,
    build_statement,
    check_statement,
    key_id,
    kms_policy_statement,
    pae,
    sign_envelope,
    statement_bytes,
    verify_envelope,
)

if TYPE_CHECKING:
    from pathlib import Path

    from eifbuild.eif import Signer

PCRS = {f"PCR{i}": f"{i:02x}" * 48 for i in (0, 1, 2, 8)}


def _statement() -> bytes:
    facts = BuildFacts(
        eif_name="app-x86_64.eif",
        eif_digests={"sha256": "ab" * 32, "sha384": "cd" * 48},
        config_path="eif.toml",
        config_sha256="ef" * 32,
        arch="x86_64",
        build_time="2024-01-01T00:00:00+00:00",
        eifbuild_version="0.1.0",
        zig_version="0.13.0",
        pcrs=PCRS,
        dependencies=[Dependency("https://example.com/k", {"sha256": "01" * 32}, "source:k")],
    )
    return statement_bytes(build_statement(facts))


def _check_independently(
    envelope: dict[str, object], public: ec.EllipticCurvePublicKey, payload: bytes
) -> None:
    parsed = Envelope.from_dict(copy.deepcopy(envelope))  # from_dict rewrites its argument's sigs
    assert parsed.pae() == pae("application/vnd.in-toto+json", payload)
    key = SSlibKey.from_crypto(public, keyid=key_id(public))
    assert set(parsed.verify([key], 1)) == {key.keyid}


def _pem_signer(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Signer:
    cert = certificate_for(key.public_key(), tmp_path / "cert.pem")
    return open_signer(cert, str(pem_key(key, tmp_path / "key.pem")))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP384R1()], ids=["P-256", "P-384"])
def test_securesystemslib_verifies_our_pem_envelopes(tmp_path: Path, curve: ec.EllipticCurve) -> None:
    key = ec.generate_private_key(curve)
    payload = _statement()
    envelope = sign_envelope(payload, _pem_signer(tmp_path, key))
    assert envelope == sign_envelope(payload, _pem_signer(tmp_path, key))  # RFC 6979: the same bytes
    _check_independently(envelope, key.public_key(), payload)
    assert verify_envelope(envelope, key.public_key()) == payload
    with pytest.raises(ProvenanceError, match="no signature by key"):
        verify_envelope(envelope, ec.generate_private_key(curve).public_key())


@pytest.mark.slow
def test_securesystemslib_verifies_an_envelope_signed_on_a_softhsm_token(
    tmp_path: Path, softhsm_token: Token
) -> None:
    token = softhsm_token  # signs in this process: the session's token (see conftest)
    cert = certificate_for(token.public_key, tmp_path / "hsm.crt")
    payload = _statement()
    envelope = sign_envelope(payload, open_signer(cert, token.uri()))
    _check_independently(envelope, token.public_key, payload)


def test_the_statement_shape_is_checked() -> None:
    statement = json.loads(_statement())
    assert check_statement(statement) == statement
    wrong = [
        ({**statement, "_type": "https://in-toto.io/Statement/v0.1"}, "_type"),
        ({**statement, "subject": []}, "subject"),
        ({**statement, "subject": [{"name": "x", "digest": {"sha256": "XYZ"}}]}, "subject\\[0\\].digest"),
        ({**statement, "predicateType": "https://slsa.dev/provenance/v0.2"}, "predicateType"),
        ({**statement, "predicate": {"runDetails": {}}}, "buildDefinition"),
    ]
    for doc, field in wrong:
        with pytest.raises(ProvenanceError, match=field):
            check_statement(doc)


def test_statement_bytes_do_not_depend_on_the_order_of_dependencies() -> None:
    base = build_statement(
        BuildFacts("a.eif", {"sha256": "00"}, "eif.toml", "11", "x86_64", "t", "v", "z", PCRS,
                   [Dependency("b", {"sha256": "22"}), Dependency("a", {"sha256": "33"})])
    )  # fmt: skip
    other = build_statement(
        BuildFacts("a.eif", {"sha256": "00"}, "eif.toml", "11", "x86_64", "t", "v", "z", PCRS,
                   [Dependency("a", {"sha256": "33"}), Dependency("b", {"sha256": "22"})])
    )  # fmt: skip
    assert statement_bytes(base) == statement_bytes(other)
    assert [d["uri"] for d in base["predicate"]["buildDefinition"]["resolvedDependencies"]] == ["a", "b"]


# --- kms-policy -----------------------------------------------------------------------------------

_POLICY_KEYS = {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}


def _assert_policy_syntax(statement: dict[str, object]) -> None:
    """IAM policy grammar for one statement: its keys, Effect, Principal, Action, and a Condition
    of operator → {condition key → value}."""
    assert set(statement) <= _POLICY_KEYS
    assert {"Effect", "Action", "Condition"} <= set(statement)
    assert statement["Effect"] in ("Allow", "Deny")
    actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    assert all(re.fullmatch(r"kms:[A-Za-z*]+", a) for a in actions)
    principal = statement["Principal"]
    assert isinstance(principal, dict)
    assert set(principal) == {"AWS"}
    condition = statement["Condition"]
    assert isinstance(condition, dict)
    for operator, keys in condition.items():
        assert re.fullmatch(r"[A-Za-z]+", operator)
        assert all(re.fullmatch(r"kms:RecipientAttestation:[A-Za-z0-9]+", k) for k in keys)
    json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_kms_policy_has_the_pcrs_of_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcr_file = tmp_path / "app-x86_64.pcr.json"
    pcr_file.write_text(json.dumps({"HashAlgorithm": "Sha384 { ... }", **PCRS}))
    role = "arn:aws:iam::123456789012:role/enclave-parent"
    assert (
        cli.main(
            ["kms-policy", str(pcr_file), "--principal", role, "--actions", "kms:Decrypt,kms:GenerateDataKey"]
        )
        == 0
    )
    statement = json.loads(capsys.readouterr().out)
    _assert_policy_syntax(statement)
    assert statement["Principal"] == {"AWS": role}
    assert statement["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Condition"] == {
        "StringEqualsIgnoreCase": {
            "kms:RecipientAttestation:ImageSha384": PCRS["PCR0"],
            "kms:RecipientAttestation:PCR1": PCRS["PCR1"],
            "kms:RecipientAttestation:PCR2": PCRS["PCR2"],
            "kms:RecipientAttestation:PCR8": PCRS["PCR8"],
        }
    }


def test_kms_policy_of_an_unsigned_eif_has_no_pcr8() -> None:
    unsigned = {k: v for k, v in PCRS.items() if k != "PCR8"}
    statement = kms_policy_statement(unsigned)
    _assert_policy_syntax(statement)
    assert statement["Action"] == "kms:Decrypt"
    assert set(statement["Condition"]["StringEqualsIgnoreCase"]) == {
        "kms:RecipientAttestation:ImageSha384",
        "kms:RecipientAttestation:PCR1",
        "kms:RecipientAttestation:PCR2",
    }


def test_kms_policy_refuses_actions_that_are_not_kms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcr_file = tmp_path / "p.json"
    pcr_file.write_text(json.dumps(PCRS))
    assert cli.main(["kms-policy", str(pcr_file), "--actions", "s3:GetObject"]) == 2
    assert "kms:Decrypt" in capsys.readouterr().err
