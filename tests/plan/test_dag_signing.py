"""`doit eif` and `doit check` end to end with keys that never touch the build host: a KMS key on
moto's server (127.0.0.1) and a key on a SoftHSM2 token. Their ECDSA signatures are randomized, so
the check compares PCRs only, and a build from scratch gives other bytes with the same PCRs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from conftest import require_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dag_helpers import DODO, EIF_TOML, Project, Run, seeded
from s3_helpers import THROWAWAY_AWS_ENV, MotoServer
from signing_helpers import certificate_for
from softhsm_helpers import MODULE, PIN, Token, make_token

from eifbuild.plan.selfcheck import RANDOMIZED_NOTE

if TYPE_CHECKING:
    from pathlib import Path

    from source_helpers import LocalServer

pytestmark = pytest.mark.slow
ARCHES = ("x86_64", "aarch64")
REGION = "eu-central-1"


def signed_project(
    root: Path, server: LocalServer, public_key: ec.EllipticCurvePublicKey, key: str
) -> Project:
    """test_dag's stand-in project for both arches, with ``[sign] key = key``."""
    proj = Project(root, server)
    root.mkdir()
    proj.write("dodo.py", DODO)
    toml = EIF_TOML.replace('arch = ["x86_64"]', 'arch = ["x86_64", "aarch64"]')
    proj.write("eif.toml", toml + f'\n[sign]\ncertificate = "keys/cert.pem"\nkey = "{key}"\n')
    proj.recipe({"x86_64": seeded("kernel", 40_000), "aarch64": seeded("kernel-arm", 50_000)})
    (root / "init.bin").write_bytes(seeded("init", 9000))
    proj.write("rootfs/bin/app", "#!/bin/sh\necho app\n").chmod(0o755)
    (root / "keys").mkdir()
    certificate_for(public_key, root / "keys/cert.pem")
    return proj


def _verify(project: Project, arch: str) -> None:
    """``eifbuild verify`` with the published PCRs, which include PCR8."""
    eif = project.eif(arch)
    assert "PCR8" in project.pcrs(arch)
    args = [sys.executable, "-m", "eifbuild", "verify", str(eif), "--pcrs", str(eif.with_suffix(".pcr.json"))]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _provenance_verifies(project: Project, arch: str) -> None:
    """The DSSE envelope (signed by KMS or the token through the same Signer) verifies with
    securesystemslib and the certificate's public key, and its subject is the published EIF."""
    from cryptography import x509  # noqa: PLC0415
    from securesystemslib.dsse import Envelope  # noqa: PLC0415
    from securesystemslib.signer import SSlibKey  # noqa: PLC0415

    from eifbuild.provenance import key_id  # noqa: PLC0415

    public = x509.load_pem_x509_certificate((project.root / "keys/cert.pem").read_bytes()).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    line = project.eif(arch).with_suffix(".intoto.jsonl").read_text()
    envelope = Envelope.from_dict(json.loads(line))
    envelope.verify([SSlibKey.from_crypto(public, keyid=key_id(public))], 1)
    subject = json.loads(envelope.payload)["subject"][0]["digest"]
    assert subject["sha256"] == hashlib.sha256(project.eif(arch).read_bytes()).hexdigest()


def _output(*runs: Run) -> str:
    return "".join(run.result.stdout + run.result.stderr for run in runs)


def build_check_and_rebuild(project: Project, secrets: tuple[str, ...]) -> None:
    """`doit eif`, `doit check` (PCRs only), and builds after deleting build/ (the store's EIF
    again) and build/ with the store (signed again: other bytes, the same PCRs)."""
    first = project.doit()
    for arch in ARCHES:
        _verify(project, arch)
        _provenance_verifies(project, arch)
    signed = {arch: project.eif(arch).read_bytes() for arch in ARCHES}
    pcrs = {arch: project.pcrs(arch) for arch in ARCHES}

    check = project.doit("check")
    out = check.result.stdout
    for arch in ARCHES:
        assert f"{arch}: PCRs identical (PCR0 " in out, out
        assert "PCR8 " in out.split(f"{arch}: PCRs identical", 1)[1].splitlines()[0]
    assert "sha256" not in out
    assert f"reproducible: every PCR matches ({RANDOMIZED_NOTE})" in out
    assert {arch: project.eif(arch).read_bytes() for arch in ARCHES} == signed  # build/ untouched

    shutil.rmtree(project.root / "build")
    republished = project.doit()
    assert republished.ran == {f"eif:{arch}" for arch in ARCHES}
    assert {arch: project.eif(arch).read_bytes() for arch in ARCHES} == signed  # the store's EIFs

    shutil.rmtree(project.root / "build")
    shutil.rmtree(project.root / "cache")
    again = project.doit()
    for arch in ARCHES:
        assert project.eif(arch).read_bytes() != signed[arch]  # randomized ECDSA
        assert project.pcrs(arch) == pcrs[arch]
        _verify(project, arch)
    for secret in secrets:
        assert secret not in _output(first, check, republished, again)


def assert_check_cannot_sign(project: Project, expected: str, secrets: tuple[str, ...], **env: str) -> None:
    """A rebuild that cannot sign is no finding: the check cannot run (exit 2), saying why in one
    line, and shows no credential."""
    run = project.doit("check", env=env, check=False)
    out = _output(run)
    assert run.result.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: the check cannot run: the rebuild cannot sign: {expected}"], out
    assert "NOT reproducible" not in out
    for secret in secrets:
        assert secret not in out


# --- AWS KMS on moto ---------------------------------------------------------------------------


@pytest.fixture
def kms(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A KMS client for moto; the doit subprocesses inherit the throw-away credentials and endpoint."""
    import boto3  # noqa: PLC0415 - the optional extra

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "EIFBUILD_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in THROWAWAY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    return boto3.session.Session().client("kms", region_name=REGION)


def _kms_key(kms: Any) -> tuple[str, ec.EllipticCurvePublicKey]:
    arn = str(kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"])
    public = serialization.load_der_public_key(kms.get_public_key(KeyId=arn)["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return arn, public


def test_kms_key_build_check_and_rebuild(kms: Any, tmp_path: Path, server: LocalServer) -> None:
    arn, public = _kms_key(kms)
    project = signed_project(tmp_path / "app", server, public, arn)
    secrets = (THROWAWAY_AWS_ENV["AWS_ACCESS_KEY_ID"], THROWAWAY_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    build_check_and_rebuild(project, secrets)
    kms.disable_key(KeyId=arn.rsplit("/", 1)[-1])  # moto 5.2's DisableKey fails (500) on an ARN
    assert_check_cannot_sign(project, f"{arn}: the KMS key is Disabled, not Enabled", secrets)
    unreachable = "http://127.0.0.1:9"
    expected = f'{arn}: KMS call failed: Could not connect to the endpoint URL: "{unreachable}/"'
    assert_check_cannot_sign(project, expected, secrets, AWS_ENDPOINT_URL=unreachable)


# --- PKCS#11 on SoftHSM2 -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Token:
    pytest.importorskip("pkcs11")
    util = require_tool("softhsm2-util")
    home = tmp_path_factory.mktemp("softhsm")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(home / "softhsm2.conf"))
        return make_token(util, home)


@pytest.fixture
def hsm_env(token: Token, monkeypatch: pytest.MonkeyPatch) -> Token:
    monkeypatch.setenv("SOFTHSM2_CONF", str(token.conf))
    for name in ("EIFBUILD_PKCS11_PIN", "EIFBUILD_PKCS11_MODULE", "EIFBUILD_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return token


def test_pkcs11_key_with_a_pin_file_build_check_and_rebuild(
    hsm_env: Token, tmp_path: Path, server: LocalServer
) -> None:
    project = signed_project(tmp_path / "app", server, hsm_env.public_key, hsm_env.uri())
    build_check_and_rebuild(project, (PIN,))


def test_pkcs11_key_with_pin_and_module_from_the_environment(
    hsm_env: Token, tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIFBUILD_PKCS11_PIN", PIN)
    monkeypatch.setenv("EIFBUILD_PKCS11_MODULE", str(MODULE))
    key = f"pkcs11:token={hsm_env.label};object={hsm_env.key_label}"
    project = signed_project(tmp_path / "app", server, hsm_env.public_key, key)
    build_check_and_rebuild(project, (PIN,))
    wrong = "0000-0000"
    expected = f"{key}: the token refused the PIN (wrong PIN)"
    assert_check_cannot_sign(project, expected, (PIN, wrong), EIFBUILD_PKCS11_PIN=wrong)
