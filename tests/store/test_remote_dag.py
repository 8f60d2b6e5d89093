"""`doit eif` with a remote cache, end to end: two checkouts with their own stores; A builds and
pushes, B pulls everything and builds nothing (real doit subprocesses; each S3 server of the ``s3``
fixture in turn: moto, Ceph RGW over HTTP, and over HTTPS with eif.toml's ``[cache] ca_bundle``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dag_helpers import ALL_X86, DODO, EIF_TOML, Project, seeded
from s3_helpers import S3Target
from source_helpers import LocalServer

from eifbuild.store import Store
from eifbuild.store.remote import generate_key


@pytest.fixture
def env(tmp_path: Path, s3: S3Target, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bucket, a signing key and the [cache] table both checkouts share."""
    for name in ("EIFBUILD_CACHE", "SOURCE_DATE_EPOCH", "EIFBUILD_REMOTE_CACHE", "EIFBUILD_REQUIRE_REMOTE"):
        monkeypatch.delenv(name, raising=False)
    bucket = s3.bucket(f"dag-{uuid.uuid4().hex[:12]}")
    secret, public = generate_key("ci-1")
    key_file = tmp_path / "ci-1.secret"
    key_file.write_text(secret)
    table = (
        f'\n[cache]\nremote = "s3://{bucket}/eif"\nendpoint_url = "{s3.endpoint}"\n'
        f'region = "us-east-1"\ntrusted_keys = ["{public}"]\n'
    )
    if s3.ca_bundle:
        table += f'ca_bundle = "{s3.ca_bundle}"\n'

    return {"table": table, "key_file": str(key_file)}


def checkout(
    tmp_path: Path, server: LocalServer, name: str, table: str, *, compile_init: bool = False
) -> Project:
    proj = Project(tmp_path / name, server)
    proj.root.mkdir()
    proj.write("dodo.py", DODO)
    toml = EIF_TOML.replace('init = { path = "init.bin" }', 'init = { compile = "eifbuild-init" }')
    proj.write("eif.toml", (toml if compile_init else EIF_TOML) + table)
    proj.recipe({"x86_64": seeded("kernel", 40_000), "aarch64": seeded("kernel-arm", 50_000)})
    (proj.root / "init.bin").write_bytes(seeded("init", 9000))
    proj.write("rootfs/bin/app", "#!/bin/sh\necho app\n").chmod(0o755)
    proj.write("rootfs/etc/config", "mode=prod\n")
    return proj


def _records(project: Project) -> list[dict[str, object]]:
    store = Store(project.root / "cache")
    return [dict(entry.record) for entry in store.entries()]


def test_b_pulls_what_a_pushed_and_builds_nothing(
    tmp_path: Path, server: LocalServer, env: dict[str, str]
) -> None:
    a = checkout(tmp_path, server, "a", env["table"])
    pushed = a.doit(env={"EIFBUILD_REMOTE_CACHE_PUSH": "1", "EIFBUILD_CACHE_SIGNING_KEY": env["key_file"]})
    assert pushed.ran == ALL_X86
    assert "pushed eif" in pushed.result.stderr
    downloads = len(server.requests)

    b = checkout(tmp_path, server, "b", env["table"])
    pulled = b.doit(env={"EIFBUILD_REQUIRE_REMOTE": "1"})  # required: a step built here is an error
    assert pulled.ran == ALL_X86  # doit ran each action: the store substituted every step
    assert len(server.requests) == downloads  # the sources came from the cache, not their URLs
    records = _records(b)
    assert records
    assert all(r.get("substituted") for r in records), records
    assert "entries pulled" in pulled.result.stderr
    assert b.eif().read_bytes() == a.eif().read_bytes()
    assert b.pcrs() == a.pcrs()

    again = b.doit()
    assert again.ran == set()


def test_doit_check_ignores_the_remote(tmp_path: Path, server: LocalServer, env: dict[str, str]) -> None:
    a = checkout(tmp_path, server, "a", env["table"])
    a.doit(env={"EIFBUILD_REMOTE_CACHE_PUSH": "1", "EIFBUILD_CACHE_SIGNING_KEY": env["key_file"]})
    b = checkout(tmp_path, server, "b", env["table"])
    b.doit()
    check = b.doit("check")
    assert "reproducible" in check.result.stdout
    assert "pulled" not in check.result.stderr


def test_an_unreachable_remote_is_one_warning_then_a_local_build(
    tmp_path: Path, server: LocalServer, env: dict[str, str]
) -> None:
    table = env["table"].replace("endpoint_url", "# endpoint_url") + 'endpoint_url = "http://127.0.0.1:9"\n'
    a = checkout(tmp_path, server, "a", table)
    run = a.doit()
    assert run.ran == ALL_X86
    warnings = [line for line in run.result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, run.result.stderr
    assert "remote cache s3://" in warnings[0]
    assert "building locally" in warnings[0]
    failed = checkout(tmp_path, server, "b", table).doit(env={"EIFBUILD_REQUIRE_REMOTE": "1"}, check=False)
    assert failed.result.returncode != 0


@pytest.mark.slow
def test_b_runs_no_zig_compile(tmp_path: Path, server: LocalServer, env: dict[str, str]) -> None:
    a = checkout(tmp_path, server, "a", env["table"], compile_init=True)
    built = a.doit(env={"EIFBUILD_REMOTE_CACHE_PUSH": "1", "EIFBUILD_CACHE_SIGNING_KEY": env["key_file"]})
    assert "compiling" in built.result.stderr
    b = checkout(tmp_path, server, "b", env["table"], compile_init=True)
    pulled = b.doit(env={"EIFBUILD_REQUIRE_REMOTE": "1"})
    assert "compiling" not in pulled.result.stderr
    assert "* pulled zig-cc" in pulled.result.stderr
    compiled = [r for r in _records(b) if r["step"]["kind"] == "zig-cc"]  # type: ignore[index]
    assert len(compiled) == 1
    assert compiled[0]["substituted"]
    assert b.eif().read_bytes() == a.eif().read_bytes()
    assert b.pcrs() == a.pcrs()


def _eifbuild(
    project: Project, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eifbuild", *args],
        cwd=project.root,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=300,
    )


def test_cache_keygen_push_and_verify(tmp_path: Path, server: LocalServer, env: dict[str, str]) -> None:
    a = checkout(tmp_path, server, "a", env["table"])
    a.doit()  # no push while building
    keygen = _eifbuild(a, "cache", "keygen", "other", "--dir", str(tmp_path))
    assert keygen.returncode == 0, keygen.stderr
    assert (tmp_path / "other.secret").stat().st_mode & 0o077 == 0
    again = _eifbuild(a, "cache", "keygen", "other", "--dir", str(tmp_path))
    assert again.returncode == 2
    assert again.stderr.startswith("error:")

    missing = _eifbuild(a, "cache", "verify")
    assert missing.returncode == 1
    assert "missing" in missing.stdout
    push = _eifbuild(a, "cache", "push", env={"EIFBUILD_CACHE_SIGNING_KEY": env["key_file"]})
    assert push.returncode == 0, push.stderr
    assert "pushed" in push.stdout
    assert "5 pushed" in push.stdout
    verify = _eifbuild(a, "cache", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "5 remote entries checked, 0 missing or bad" in verify.stdout
    nokey = _eifbuild(a, "cache", "push", env={"EIFBUILD_CACHE_SIGNING_KEY": ""})
    assert nokey.returncode == 2
    assert "EIFBUILD_CACHE_SIGNING_KEY" in nokey.stderr
