"""[sign] keys held elsewhere: eif.toml keeps KMS ARNs and pkcs11: URIs as they are, and ``doit
check`` compares only the PCRs of EIFs signed with them (their ECDSA signatures are randomized)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_config import MINIMAL

from eifbuild.errors import SigningError, ToolError
from eifbuild.plan.config import Signing, parse_project
from eifbuild.plan.selfcheck import RANDOMIZED_NOTE, _compare, _rebuild_failure, verdict

ARN = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
URI = "pkcs11:token=hsm;object=enclave?pin-source=file:/run/pin"


@pytest.mark.parametrize("key", [ARN, URI, "keys/key.pem"])
def test_sign_key_specs_in_eif_toml(tmp_path: Path, key: str) -> None:
    text = MINIMAL + f'\n[sign]\ncertificate = "keys/cert.pem"\nkey = "{key}"\n'
    sign = parse_project(text, tmp_path / "eif.toml").sign
    assert sign is not None
    assert sign.key == (str(tmp_path / key) if key.endswith(".pem") else key)
    assert sign.deterministic is key.endswith(".pem")


@dataclass(frozen=True)
class _Out:
    eif: Path
    pcrs: Path


@dataclass(frozen=True)
class _Node:
    out: _Out


@dataclass(frozen=True)
class _Project:
    root: Path
    sign: Signing | None


@dataclass(frozen=True)
class _Plan:
    project: _Project
    eifs: dict[str, _Node]


def _build(root: Path, eif_bytes: bytes) -> _Node:
    out = _Out(root / "build/app.eif", root / "build/app.pcr.json")
    out.eif.parent.mkdir(parents=True)
    out.eif.write_bytes(eif_bytes)
    out.pcrs.write_text(json.dumps({"PCR0": "00" * 48, "PCR8": "88" * 48}))
    return _Node(out)


@pytest.mark.parametrize("key", [ARN, URI])
def test_check_compares_only_pcrs_of_randomized_signatures(tmp_path: Path, key: str) -> None:
    node = _build(tmp_path / "here", b"signature one")
    _build(tmp_path / "copy", b"signature two")
    plan = _Plan(_Project(tmp_path / "here", Signing(tmp_path / "cert.pem", key)), {"x86_64": node})
    ok, lines = _compare(plan, tmp_path / "copy")  # type: ignore[arg-type]
    assert ok
    assert lines == [f"x86_64: PCRs identical (PCR0 {'0' * 16}…, PCR8 {'8' * 16}…)"]
    assert verdict(ok, file_bytes=False) == f"reproducible: every PCR matches ({RANDOMIZED_NOTE})"


def test_check_compares_file_bytes_of_pem_signatures(tmp_path: Path) -> None:
    node = _build(tmp_path / "here", b"signature one")
    _build(tmp_path / "copy", b"signature two")
    plan = _Plan(_Project(tmp_path / "here", Signing(tmp_path / "cert.pem", "/k.pem")), {"x86_64": node})
    ok, lines = _compare(plan, tmp_path / "copy")  # type: ignore[arg-type]
    assert not ok
    assert len(lines) == 1
    assert lines[0].startswith("x86_64: sha256 differs: ")


def test_a_rebuild_that_cannot_sign_means_the_check_cannot_run(tmp_path: Path) -> None:
    result = subprocess.CompletedProcess(["doit"], 1, "error: refused\n", "")
    failure = tmp_path / "failure"
    failure.write_text(f"SigningError {ARN}: the KMS key is Disabled, not Enabled")
    found = _rebuild_failure(result, tmp_path, failure)
    assert isinstance(found, SigningError)  # doit's exit code 2, not a finding
    expected = f"the check cannot run: the rebuild cannot sign: {ARN}: the KMS key is Disabled, not Enabled"
    assert str(found) == expected
    failure.write_text("ToolError zig failed")
    assert isinstance(_rebuild_failure(result, tmp_path, failure), ToolError)


def test_doit_start_up_imports_no_signing_sdk() -> None:
    script = (
        "import sys; import eifbuild.tasks; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert not set(result.stdout.split()) & {"boto3", "botocore", "pkcs11"}


def test_doit_start_up_loads_neither_the_self_check_nor_zig() -> None:
    """doit loads every task on every run: `doit eif` must not pay for `doit check`'s code (and
    through it the toolchain) nor for zig's; only running those steps imports them."""
    script = "import sys; import eifbuild.tasks; print(' '.join(sorted(m for m in sys.modules if m.startswith('eifbuild'))))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert not loaded & {"eifbuild.plan.selfcheck", "eifbuild.toolchain.zig", "eifbuild.toolchain.kernel"}
