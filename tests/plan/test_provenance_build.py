"""`doit eif`'s provenance: the statement beside each EIF (byte-identical from two checkouts of the
same commit), its DSSE envelope when the project signs, checked by readers that are not ours
(securesystemslib's DSSE verification, the in-toto attestation types), and `provenance verify`."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dag_helpers import DODO, EIF_TOML, Project, seeded
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
from signing_helpers import certificate_for, pem_key

from eifbuild.provenance import BUILD_TYPE, PREDICATE_TYPE, key_id

if TYPE_CHECKING:
    from pathlib import Path

    from source_helpers import LocalServer

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00",
}


def _git(root: Path, *args: str) -> str:
    import os  # noqa: PLC0415

    env = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": "/dev/null"}
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def signed_checkout(root: Path, server: LocalServer, key: ec.EllipticCurvePrivateKey) -> Project:
    proj = Project(root, server)
    root.mkdir()
    proj.write("dodo.py", DODO)
    proj.write("eif.toml", EIF_TOML + '\n[sign]\ncertificate = "keys/cert.pem"\nkey = "keys/key.pem"\n')
    proj.recipe({"x86_64": seeded("kernel", 40_000)})
    (root / "init.bin").write_bytes(seeded("init", 9000))
    proj.write("rootfs/bin/app", "#!/bin/sh\necho app\n").chmod(0o755)
    (root / "keys").mkdir()
    certificate_for(key.public_key(), root / "keys/cert.pem")
    pem_key(key, root / "keys/key.pem")
    proj.write(".gitignore", "__pycache__/\n")  # build/, cache/ and .doit.db: not the tree's state
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "one")
    return proj


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eifbuild", *args], capture_output=True, text=True, check=False
    )


def _check_with_the_spec_types(statement: dict[str, Any]) -> None:
    """in-toto's own Statement validation, and the SLSA v1 predicate parsed by its proto (no field
    the spec does not have, every type right)."""
    subjects = [
        json_format.ParseDict(s, Statement([], "", {}).pb.subject.add().__class__())
        for s in statement["subject"]
    ]
    Statement(subjects, statement["predicateType"], statement["predicate"]).validate()
    json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())


def test_provenance_is_identical_from_two_checkouts_and_verifies(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    key = ec.generate_private_key(ec.SECP384R1())
    first = signed_checkout(tmp_path / "one", server, key)
    second_root = tmp_path / "elsewhere" / "two"
    second_root.parent.mkdir()
    shutil.copytree(first.root, second_root)  # the same commit, another place (and its own store)
    second = Project(second_root, server)
    first.doit()
    second.doit()
    names = ("hello-x86_64.intoto.json", "hello-x86_64.intoto.jsonl")
    for name in names:
        assert (first.root / "build" / name).read_bytes() == (second.root / "build" / name).read_bytes(), name

    text = (first.root / "build" / names[0]).read_text()
    for secret in (str(tmp_path), "/home/", "elsewhere"):
        assert secret not in text
    statement = json.loads(text)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    eif = first.eif()
    import hashlib  # noqa: PLC0415

    data = eif.read_bytes()
    assert statement["subject"] == [
        {
            "name": "hello-x86_64.eif",
            "digest": {
                "sha256": hashlib.sha256(data).hexdigest(),
                "sha384": hashlib.sha384(data).hexdigest(),
            },
        }
    ]
    predicate = statement["predicate"]
    definition = predicate["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    external = definition["externalParameters"]
    assert external["config"]["path"] == "eif.toml"
    assert (
        external["config"]["digest"]["sha256"]
        == hashlib.sha256((first.root / "eif.toml").read_bytes()).hexdigest()
    )
    assert external["arch"] == "x86_64"
    assert external["source"] == {"commit": _git(first.root, "rev-parse", "HEAD"), "clean": True}
    assert definition["internalParameters"]["build_time"] == "2024-01-01T00:00:00+00:00"
    deps = {(d.get("name"), d["uri"]) for d in definition["resolvedDependencies"]}
    assert ("recipe:test", "recipes/test.toml") in deps
    assert ("file", "init.bin") in deps
    assert ("tree", "rootfs") in deps
    assert ("file", "keys/cert.pem") in deps
    assert any(name == "source:test.kernel.x86_64" and uri.startswith("http://") for name, uri in deps)
    pcrs = first.pcrs()
    assert predicate["runDetails"]["byproducts"] == [
        {"name": f"PCR{i}", "digest": {"sha384": pcrs[f"PCR{i}"]}} for i in (0, 1, 2, 8)
    ]
    assert predicate["runDetails"]["builder"]["id"].startswith("urn:eifbuild:builder@")
    _check_with_the_spec_types(statement)

    # the envelope: one line, verified by securesystemslib with the public key alone
    lines = (first.root / "build" / names[1]).read_text().splitlines()
    assert len(lines) == 1
    envelope = Envelope.from_dict(json.loads(lines[0]))
    assert envelope.payload_type == "application/vnd.in-toto+json"
    assert json.loads(envelope.payload) == statement
    public = SSlibKey.from_crypto(key.public_key(), keyid=key_id(key.public_key()))
    assert set(envelope.verify([public], 1)) == {public.keyid}

    # `provenance verify`: signature, shape, EIF digests and PCRs
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    envelope_file = first.root / "build" / names[1]
    ok = _cli("provenance", "verify", str(envelope_file), "--eif", str(eif), "--key", str(pub))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "checked: signature, statement, EIF digests, PCRs" in ok.stdout
    cert = _cli(
        "provenance", "verify", str(envelope_file), "--certificate", str(first.root / "keys/cert.pem")
    )
    assert cert.returncode == 0, cert.stdout + cert.stderr
    other = tmp_path / "other.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    wrong_key = _cli("provenance", "verify", str(envelope_file), "--key", str(other))
    assert wrong_key.returncode == 1
    assert "no signature by key" in wrong_key.stdout
    tampered = json.loads(lines[0])
    forged = {**statement, "subject": [{"name": "x.eif", "digest": {"sha256": "00" * 32}}]}
    tampered["payload"] = base64.b64encode(json.dumps(forged).encode()).decode()
    bad = tmp_path / "tampered.intoto.jsonl"
    bad.write_text(json.dumps(tampered) + "\n")
    refused = _cli("provenance", "verify", str(bad), "--key", str(pub))
    assert refused.returncode == 1, refused.stdout
    other_eif = tmp_path / "other.eif"
    other_eif.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    mismatch = _cli("provenance", "verify", str(first.root / "build" / names[0]), "--eif", str(other_eif))
    assert mismatch.returncode == 1
    assert "not the statement's subject" in mismatch.stdout

    # a no-op run leaves the files alone; a new commit (the EIF unchanged) updates the statement
    before = envelope_file.stat().st_mtime_ns
    first.doit()
    assert envelope_file.stat().st_mtime_ns == before
    first.write("notes.txt", "more\n")
    dirty = first.doit()
    assert "eif:x86_64" in dirty.ran
    assert (
        json.loads((first.root / "build" / names[0]).read_text())["predicate"]["buildDefinition"][
            "externalParameters"
        ]["source"]["clean"]
        is False
    )
    assert first.eif().read_bytes() == data


def test_unsigned_builds_write_the_plain_statement_and_provenance_may_have_its_own_key(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    proj = Project(tmp_path / "app", server)
    proj.root.mkdir()
    proj.write("dodo.py", DODO)
    proj.write("eif.toml", EIF_TOML)
    proj.recipe({"x86_64": seeded("kernel", 40_000)})
    (proj.root / "init.bin").write_bytes(seeded("init", 9000))
    proj.write("rootfs/bin/app", "#!/bin/sh\necho app\n").chmod(0o755)
    proj.doit()
    build = proj.root / "build"
    statement = json.loads((build / "hello-x86_64.intoto.json").read_text())
    assert "source" not in statement["predicate"]["buildDefinition"]["externalParameters"]  # not git
    assert [b["name"] for b in statement["predicate"]["runDetails"]["byproducts"]] == ["PCR0", "PCR1", "PCR2"]
    assert not (build / "hello-x86_64.intoto.jsonl").exists()
    ok = _cli("provenance", "verify", str(build / "hello-x86_64.intoto.json"), "--eif", str(proj.eif()))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "unsigned" in ok.stdout

    # [provenance] signs the statement of an unsigned EIF (the EIF does not change)
    eif = proj.eif().read_bytes()
    key = ec.generate_private_key(ec.SECP256R1())
    (proj.root / "prov").mkdir()
    certificate_for(key.public_key(), proj.root / "prov/cert.pem")
    pem_key(key, proj.root / "prov/key.pem")
    toml = proj.root / "eif.toml"
    toml.write_text(
        toml.read_text() + '\n[provenance]\ncertificate = "prov/cert.pem"\nkey = "prov/key.pem"\n'
    )
    proj.doit()
    assert proj.eif().read_bytes() == eif
    envelope = Envelope.from_dict(json.loads((build / "hello-x86_64.intoto.jsonl").read_text()))
    public = SSlibKey.from_crypto(key.public_key(), keyid=key_id(key.public_key()))
    envelope.verify([public], 1)
    signed = _cli(
        "provenance", "verify", str(build / "hello-x86_64.intoto.jsonl"),
        "--certificate", str(proj.root / "prov/cert.pem"), "--eif", str(proj.eif()),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stdout + signed.stderr
    unsigned_with_key = _cli(
        "provenance",
        "verify",
        str(build / "hello-x86_64.intoto.json"),
        "--certificate",
        str(proj.root / "prov/cert.pem"),
    )
    assert unsigned_with_key.returncode == 1


def test_reproduce_rebuilds_what_the_provenance_describes(
    tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    key = ec.generate_private_key(ec.SECP384R1())
    proj = signed_checkout(tmp_path / "repo", server, key)
    proj.doit()
    build = proj.root / "build"
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    envelope = str(build / "hello-x86_64.intoto.jsonl")
    ok = _cli("reproduce", envelope, "--key", str(pub), "-C", str(proj.root))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "reproduced: the EIF and every PCR match" in ok.stdout

    # a statement whose PCR1 is not what the inputs give: a difference, exit 1
    statement = json.loads((build / "hello-x86_64.intoto.json").read_text())
    statement["predicate"]["runDetails"]["byproducts"][1]["digest"]["sha384"] = "ab" * 48
    forged = tmp_path / "forged.intoto.json"
    forged.write_text(json.dumps(statement))
    differs = _cli("reproduce", str(forged), "-C", str(proj.root))
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "x86_64: PCR1 differs" in differs.stdout

    # another eif.toml, then another commit: refused in one line before any rebuild
    toml = proj.root / "eif.toml"
    toml.write_text(toml.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    edited = _cli("reproduce", envelope, "-C", str(proj.root))
    assert edited.returncode == 2
    assert len(edited.stderr.strip().splitlines()) == 1, edited.stderr
    assert "the provenance's eif.toml has" in edited.stderr
    _git(proj.root, "commit", "-qam", "two")
    moved = _cli("reproduce", envelope, "-C", str(proj.root))
    assert moved.returncode == 2
    assert "this checkout is at" in moved.stderr
