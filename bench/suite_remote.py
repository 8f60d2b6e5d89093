"""The shared build cache: the demo build cold with an empty local store and a warm remote, against
the same build cold without a remote (issue #16's goal: at most 0.1x).

The remote is moto's S3 server on 127.0.0.1 (a subprocess; the ``test`` extra installs it). Both
cold builds start with an empty store, download cache and zig cache; the remote is filled in
between with ``eifbuild cache push`` from the first build's store.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Final

from harness import CommandFailed, Series, progress, run
from report import Row
from suite_demo import make_project

if TYPE_CHECKING:
    from pathlib import Path

    from options import Options

AWS_ENV: Final = {
    "AWS_ACCESS_KEY_ID": "bench-not-a-key",
    "AWS_SECRET_ACCESS_KEY": "bench-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_moto(opts: Options, port: int) -> subprocess.Popen[bytes]:
    cmd = [opts.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise CommandFailed("moto.server did not start (pip install 'moto[server]')")


def _setup_remote(opts: Options, project: Path, endpoint: str, env: dict[str, str]) -> dict[str, str]:
    """Create the bucket and a key pair; add [cache] to the project; return the pusher's env."""
    make_bucket = (
        "import boto3,sys; boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket='bench')"
    )
    run([opts.python, "-c", make_bucket, endpoint], env=env)
    keys = opts.work / "remote-keys"
    keys.mkdir()
    run([opts.python, "-m", "eifbuild", "cache", "keygen", "bench", "--dir", str(keys)], env=env)
    public = (keys / "bench.pub").read_text().strip()
    table = (
        f'\n[cache]\nremote = "s3://bench/demo"\nendpoint_url = "{endpoint}"\n'
        f'region = "us-east-1"\ntrusted_keys = ["{public}"]\n'
    )
    with open(project / "eif.toml", "a", encoding="utf-8") as fh:
        fh.write(table)
    return {"EIFBUILD_CACHE_SIGNING_KEY": str(keys / "bench.secret")}


def rows(opts: Options) -> list[Row]:
    project = opts.work / "remote-demo"
    make_project(opts, project)
    caches = opts.work / "remote-caches"
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = _start_moto(opts, port)
    without, with_remote = Series("doit eif, cold, no remote"), Series("doit eif, cold, warm remote")
    try:

        def env(name: str, **extra: str) -> dict[str, str]:
            return opts.env(
                {
                    **AWS_ENV,
                    "EIFBUILD_CACHE": str(caches / name / "store"),
                    "EIFBUILD_ZIG_CACHE": str(caches / name / "zig"),
                    "EIFBUILD_SOURCES_DIR": str(caches / name / "sources"),
                    **extra,
                }
            )

        pusher = _setup_remote(opts, project, endpoint, env("setup"))
        cmd = [opts.python, "-m", "doit", "eif"]
        for i in range(opts.demo_repeat):
            shutil.rmtree(caches, ignore_errors=True)
            shutil.rmtree(project / "build", ignore_errors=True)
            progress(f"remote: cold build without a remote {i + 1}")
            without.samples.append(run(cmd, cwd=project, env=env("cold", EIFBUILD_REMOTE_CACHE="")))
            push = [opts.python, "-m", "eifbuild", "cache", "push"]
            run(push, cwd=project, env=env("cold", **pusher))
            shutil.rmtree(project / "build", ignore_errors=True)
            progress(f"remote: cold build from the warm remote {i + 1}")
            required = env("pull", EIFBUILD_REQUIRE_REMOTE="1")
            with_remote.samples.append(run(cmd, cwd=project, env=required))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        shutil.rmtree(caches, ignore_errors=True)
    ratio = with_remote.median / without.median
    group = "remote cache"
    return [
        Row(group, without, note="empty store, download and zig caches"),
        Row(
            group,
            with_remote,
            baseline=without,
            goal="<= 0.1x",
            met=ratio <= 0.1,
            note="moto S3 on 127.0.0.1",
        ),
    ]
