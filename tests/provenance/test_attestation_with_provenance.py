"""``eifbuild attestation verify DOC --provenance FILE --key PUB``: the expected PCRs come from a
provenance file whose signature was checked first."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from attestation_helpers import BY_FILE, VECTORS
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from signing_helpers import certificate_for, pem_key

from eifbuild import cli
from eifbuild.eif import open_signer
from eifbuild.provenance import BuildFacts, build_statement, envelope_line, sign_envelope, statement_bytes

if TYPE_CHECKING:
    from pathlib import Path

GOOD = "13.b64"
AT = "2024-09-07T14:37:40Z"


def _signed_provenance(tmp_path: Path, pcrs: dict[str, str]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP384R1())
    signer = open_signer(
        certificate_for(key.public_key(), tmp_path / "c.pem"), str(pem_key(key, tmp_path / "k.pem"))
    )
    facts = BuildFacts(
        "hello-x86_64.eif", {"sha256": "00" * 32}, "eif.toml", "11" * 32, "x86_64", "t", "v", "z", pcrs
    )
    payload = statement_bytes(build_statement(facts))
    path = tmp_path / "hello-x86_64.intoto.jsonl"
    path.write_bytes(envelope_line(sign_envelope(payload, signer)))
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, pub


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["attestation", "verify", str(VECTORS / GOOD), "--at", AT, *args])
    out, err = capsys.readouterr()
    return code, out + err


def test_pcrs_from_a_signed_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = BY_FILE[GOOD]
    pcrs = {f"PCR{i}": doc[f"pcr{i}"] for i in (0, 1, 2, 8)}
    path, pub = _signed_provenance(tmp_path, pcrs)
    code, out = _run(capsys, "--provenance", str(path), "--key", str(pub))
    assert code == 0, out
    assert "PCR8" in out

    (tmp_path / "w").mkdir()
    wrong, wrong_pub = _signed_provenance(tmp_path / "w", {**pcrs, "PCR1": "ab" * 48})
    code, out = _run(capsys, "--provenance", str(wrong), "--key", str(wrong_pub))
    assert code == 1
    assert "PCR1" in out

    code, out = _run(capsys, "--provenance", str(path), "--key", str(wrong_pub))  # another signer
    assert code == 2
    assert "provenance not verified" in out
    code, out = _run(capsys, "--provenance", str(path))
    assert code == 2
    assert "--key" in out
    tampered = json.loads(path.read_text())
    tampered["signatures"][0]["sig"] = tampered["signatures"][0]["sig"][::-1]
    path.write_text(json.dumps(tampered) + "\n")
    code, out = _run(capsys, "--provenance", str(path), "--key", str(pub))
    assert code == 2
