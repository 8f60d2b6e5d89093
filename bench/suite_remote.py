"""The shared build cache against a real S3 server (issue #24): a cold build of a real app from a
warm remote, against the same build without the remote and against the raw transfer of the same
bytes with boto3 (the limit; goal: the pull within 1.5x of it), and the push against a raw upload.

The server is a throw-away Ceph RADOS Gateway (``tests/ceph_rgw.py``: Debian's ``ceph-mon``,
``ceph-osd``, ``radosgw``; objects in the OSD's RAM) on 127.0.0.1 over HTTP, with the transfer rows
repeated over HTTPS; without Ceph, moto's S3 server (the output says so).

The app (full run) is a ~250 MB Debian rootfs with python3, numpy, pandas, lxml, cryptography and
requests, from Debian's packages the way ``tests/debian_app.py`` makes its app (``apt-get
download`` + ``dpkg-deb -x``, cached in ``<data>/debs``), as a one-layer gzip OCI layout (cached in
``<data>``) with the repo's demo kernel and eifbuild's init (zig), x86_64 only. Per repeat,
interleaved:

- *doit eif, cold, no remote*: empty store, download cache and zig cache (zig builds musl);
- *doit eif, cold, warm remote*: another empty store, download cache and zig cache, every step
  pulled (``EIFBUILD_REQUIRE_REMOTE=1``), vs *raw download*: s3transfer (``aws s3 cp
  --recursive``'s engine, default TransferConfig) of every blob of the warm prefix;
- *pull entries*: the entries alone (library, no doit), vs the same raw download (HTTP, HTTPS);
- *push entries*: ``push_entry`` of every entry of the cold store into an empty prefix (as
  ``eifbuild cache push``, which re-hashes each entry first), vs *raw upload* of the same blobs.

``--quick`` (CI's smoke run) uses a synthetic store instead (an entry with one 40 MiB blob and 20
small files, one with three 3 MiB files): only the push/pull vs raw rows, over HTTP.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from typing import TYPE_CHECKING, Any, Final

from harness import CommandFailed, Series, progress, run
from report import Row
from suite_demo import make_project

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from harness import Sample
    from options import Options

AWS_ENV: Final = {
    "AWS_ACCESS_KEY_ID": "bench-not-a-key",
    "AWS_SECRET_ACCESS_KEY": "bench-not-a-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Beyond tests/debian_app.py's app: what a minimal Debian has (debootstrap's minbase, roughly) and
# a python3 app's usual libraries; about 250 MB unpacked once docs and translations are pruned.
APP_PACKAGES: Final = (
    *("apt", "bash", "coreutils", "dpkg", "findutils", "grep", "gzip", "hostname", "login", "mount"),
    *("perl-base", "sed", "tar", "util-linux", "debianutils", "diffutils", "libc-bin", "ncurses-base"),
    *("base-files", "base-passwd", "bsdutils", "sysvinit-utils", "passwd", "adduser", "ca-certificates"),
    *("python3", "python3-pip", "python3-numpy", "python3-cryptography", "python3-yaml"),
    *("python3-requests", "python3-pandas", "python3-lxml"),
)
APP_TOML: Final = """\
[eif]
name = "pyapp"
version = "0.1.0"
arch = ["x86_64"]
output = "build"
recipes = ["recipes/demo-app.toml"]

[bootstrap]
init = { compile = "eifbuild-init" }
nsm = "none"

[app]
oci = "{ref}"
cmd = ["/app/start.sh"]
"""
LAYOUT_VERSION: Final = 2  # bump when _write_layout changes: the cached layout is made again
QUICK_MIB: Final = 40
GROUP: Final = "remote cache"


def _tests_dir(opts: Options) -> None:
    tests = str(opts.repo / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _server(opts: Options) -> Iterator[tuple[str, str | None, str | None, str]]:
    """(HTTP endpoint, HTTPS endpoint, its CA bundle, what it is) of a fresh S3 server."""
    _tests_dir(opts)
    import ceph_rgw  # noqa: PLC0415 - tests/ceph_rgw.py

    if ceph_rgw.available():
        with ceph_rgw.CephRgw(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"]) as rgw:
            ca_bundle = opts.work / "rgw.crt"  # a copy: the cluster's dir is in /tmp, which others clean
            shutil.copy(rgw.ca_bundle, ca_bundle)
            yield rgw.endpoint, rgw.https_endpoint, str(ca_bundle), "Ceph RGW (memstore) on 127.0.0.1"
        return
    progress("remote: Ceph RGW is not installed (apt-get install ceph-mon ceph-osd radosgw): using moto")
    port = _free_port()
    cmd = [opts.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise CommandFailed("moto.server did not start (pip install 'moto[server]')") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", None, None, "moto S3 on 127.0.0.1 (Ceph RGW not installed)"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the real app ----------------------------------------------------------------------------------
def real_app(opts: Options) -> tuple[Path, int]:
    """The app's OCI layout (made once, cached in ``opts.data``) and its rootfs size in bytes."""
    _tests_dir(opts)
    import debian_app  # noqa: PLC0415 - tests/debian_app.py

    debs, versions = debian_app.download_debs([*debian_app.PACKAGES, *APP_PACKAGES], opts.data / "debs")
    digest = hashlib.sha256(repr(versions).encode()).hexdigest()[:16]
    layout = opts.data / f"remote-app-{LAYOUT_VERSION}-{digest}"
    done = layout / "rootfs-size"
    if done.is_file():
        return layout, int(done.read_text())
    shutil.rmtree(layout, ignore_errors=True)
    scratch = opts.work / "remote-app-rootfs"
    progress("remote: making the Debian app (once)")
    root = debian_app.make_rootfs(debs, scratch, versions)
    size = debian_app.tree_size(root)
    _write_layout(root, layout)
    shutil.rmtree(scratch, ignore_errors=True)
    done.write_text(str(size))
    return layout, size


def _write_layout(root: Path, layout: Path) -> None:
    """A one-layer OCI image layout (gzip layer) of ``root``."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    raw = layout / "layer.tar"
    with tarfile.open(raw, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    diff_id = _sha_file(raw)
    packed = layout / "layer.tar.gz"
    with open(raw, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    raw.unlink()

    def put(data: bytes) -> dict[str, Any]:
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha).write_bytes(data)
        return {"digest": f"sha256:{sha}", "size": len(data)}

    layer_sha = _sha_file(packed)
    size = packed.stat().st_size
    packed.rename(blobs / layer_sha)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/app/start.sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(_json(config))},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": f"sha256:{layer_sha}",
                "size": size,
            }
        ],
    }
    top = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(_json(manifest)),
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [top]}
    (layout / "index.json").write_bytes(_json(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


def _sha_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _registry(opts: Options, layout: Path) -> Iterator[str | None]:
    """The app image in a throw-away docker-registry on 127.0.0.1 (``tests/oci_registry.py``), as
    ``host/pyapp@sha256:…``; None without Debian's ``docker-registry`` or ``skopeo``."""
    binary, skopeo = shutil.which("docker-registry"), shutil.which("skopeo")
    if binary is None or skopeo is None:
        yield None
        return
    _tests_dir(opts)
    import oci_registry  # noqa: PLC0415 - tests/oci_registry.py

    workdir = opts.work / "registry"
    workdir.mkdir()
    registry = oci_registry.Registry(binary, workdir)
    registry.start()
    try:
        registry.push(skopeo, layout, "v1", "pyapp")
        digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
        yield f"{registry.host}/pyapp@{digest}"
    finally:
        registry.stop()


def _app_project(opts: Options, layout: Path, ref: str | None) -> Path:
    """The app's project: a registry image pinned by digest (as the README's OCI example), or the
    layout itself when there is no registry (then a cold build imports the layer locally, remote
    or not: local layouts are read in place)."""
    project = opts.work / "remote-app"
    make_project(opts, project)
    if ref is None:
        shutil.copytree(layout, project / "app-image", copy_function=os.link)
        (project / "app-image" / "rootfs-size").unlink()
    (project / "eif.toml").write_text(APP_TOML.replace("{ref}", ref or "app-image"))
    return project


# -- the run ---------------------------------------------------------------------------------------
class _Bench:
    def __init__(self, opts: Options, endpoint: str) -> None:
        self.opts = opts
        self.endpoint = endpoint
        self.caches = opts.work / "remote-caches"
        self.xfer = str(opts.repo / "bench" / "remote_xfer.py")
        self.extra: dict[str, str] = {}

    def env(self, name: str = "setup", **extra: str) -> dict[str, str]:
        return self.opts.env(
            {
                **AWS_ENV,
                "BENCH_S3_ENDPOINT": self.endpoint,
                "EIFBUILD_CACHE": str(self.caches / name / "store"),
                "EIFBUILD_ZIG_CACHE": str(self.caches / name / "zig"),
                "EIFBUILD_SOURCES_DIR": str(self.caches / name / "sources"),
                **self.extra,
                **extra,
            }
        )

    def xfer_cmd(self, *args: str, **env: str) -> Sample:
        return run([self.opts.python, self.xfer, *args], env=self.env(**env), capture=True)

    def keys(self) -> None:
        keys = self.opts.work / "remote-keys"
        keys.mkdir()
        run(
            [self.opts.python, "-m", "eifbuild", "cache", "keygen", "bench", "--dir", str(keys)],
            env=self.env(),
        )
        self.extra["BENCH_TRUSTED_KEY"] = (keys / "bench.pub").read_text().strip()
        self.extra["EIFBUILD_CACHE_SIGNING_KEY"] = str(keys / "bench.secret")


def _transfer_rounds(
    bench: _Bench, store: Path, series: dict[str, Series], i: int, https: tuple[str, str] | None
) -> None:
    """One round of pull vs raw download (HTTP, maybe HTTPS), then push vs raw upload, each pair in
    alternating order. The uploaded prefixes are deleted last: Ceph RGW frees deleted objects in
    the background (its gc runs every 10 s), which must not land in a measured pull; in a full run
    the next cold build (half a minute without the remote) absorbs it."""

    def pair(first: tuple[str, Callable[[], Sample]], second: tuple[str, Callable[[], Sample]]) -> None:
        for name, command in (first, second) if i % 2 == 0 else (second, first):
            os.sync()  # the writeback of the last command's ~1 GB must not land in this one
            series[name].samples.append(command())

    def pull(env: dict[str, str]) -> Sample:
        shutil.rmtree(empty, ignore_errors=True)
        return bench.xfer_cmd("pull", str(store), str(empty), "s3://bench/warm", **env)

    def raw_down(env: dict[str, str]) -> Sample:
        shutil.rmtree(empty, ignore_errors=True)
        return bench.xfer_cmd("raw-down", "s3://bench/warm", str(empty), **env)

    empty = bench.caches / "pulled"
    ends: list[tuple[str, dict[str, str]]] = [("", {})]
    if https:
        ends.append(("-https", {"BENCH_S3_ENDPOINT": https[0], "BENCH_S3_CA_BUNDLE": https[1]}))
    for suffix, env in ends:
        progress(f"remote: pull vs raw download{suffix} {i + 1}")
        pair(
            (f"pull{suffix}", functools.partial(pull, env)),
            (f"raw-down{suffix}", functools.partial(raw_down, env)),
        )
    shutil.rmtree(empty, ignore_errors=True)
    series["raw-verify"].samples.append(bench.xfer_cmd("raw-down", "s3://bench/warm", str(empty), "verify"))
    shutil.rmtree(empty, ignore_errors=True)
    progress(f"remote: push vs raw upload {i + 1}")
    pair(
        ("push", lambda: bench.xfer_cmd("push", str(store), f"s3://bench/push-{i}")),
        ("raw-up", lambda: bench.xfer_cmd("raw-up", str(store), f"s3://bench/raw-{i}")),
    )
    for prefix in (f"push-{i}", f"raw-{i}"):
        bench.xfer_cmd("delete", f"s3://bench/{prefix}")


def rows(opts: Options) -> list[Row]:
    with _server(opts) as (endpoint, https_endpoint, ca_bundle, where):
        bench = _Bench(opts, endpoint)
        try:
            return _rows(
                opts, bench, (https_endpoint, ca_bundle) if https_endpoint and ca_bundle else None, where
            )
        finally:
            shutil.rmtree(bench.caches, ignore_errors=True)


def _rows(opts: Options, bench: _Bench, https: tuple[str, str] | None, where: str) -> list[Row]:
    bench.xfer_cmd("make-bucket", "bench")
    bench.keys()
    series = _series(https)
    if opts.quick:
        store = bench.caches / "synth"
        bench.xfer_cmd("synth", str(store), str(QUICK_MIB))
        bench.xfer_cmd("push", str(store), "s3://bench/warm")
        for i in range(opts.repeat):
            _transfer_rounds(bench, store, series, i, https)
        what = f"synthetic entries ({QUICK_MIB} MiB + 9 MiB), {where}"
        return _transfer_rows(series, what)
    layout, size = real_app(opts)
    with _registry(opts, layout) as ref:
        if ref is None:
            progress("remote: no docker-registry/skopeo: the app is a local OCI layout")
        project = _app_project(opts, layout, ref)
        return _app_rows(opts, bench, https, where=where, project=project, size=size, ref=ref)


def _app_rows(
    opts: Options,
    bench: _Bench,
    https: tuple[str, str] | None,
    *,
    where: str,
    project: Path,
    size: int,
    ref: str | None,
) -> list[Row]:
    series = _series(https)
    without, pulled = Series("doit eif, cold, no remote"), Series("doit eif, cold, warm remote")
    doit = [opts.python, "-m", "doit", "eif"]
    cold_store = bench.caches / "cold" / "store"
    for i in range(opts.demo_repeat):
        for name in ("cold", "pull"):
            shutil.rmtree(bench.caches / name, ignore_errors=True)
        shutil.rmtree(project / "build", ignore_errors=True)
        progress(f"remote: cold build without a remote {i + 1}")
        without.samples.append(run(doit, cwd=project, env=bench.env("cold", EIFBUILD_REMOTE_CACHE="")))
        if i == 0:
            _add_cache_table(project, bench)
            bench.xfer_cmd("push", str(cold_store), "s3://bench/warm")
        shutil.rmtree(project / "build", ignore_errors=True)
        progress(f"remote: cold build from the warm remote {i + 1}")
        os.sync()
        env = bench.env("pull", EIFBUILD_REQUIRE_REMOTE="1")
        pulled.samples.append(run(doit, cwd=project, env=env))
        _transfer_rounds(bench, cold_store, series, i, https)
    mib = size / (1 << 20)
    vs_raw = Series("doit eif, cold, warm remote (vs raw download)", pulled.samples)
    ratio = vs_raw.median / series["raw-down"].median
    image = "registry image" if ref else "local OCI layout"
    app = f"Debian app ({image}), {mib:.0f} MiB rootfs, x86_64"
    return [
        Row(GROUP, without, note=f"{app}; empty store, download and zig caches"),
        Row(
            GROUP,
            pulled,
            baseline=without,
            goal="<= 0.1x",
            met=pulled.median / without.median <= 0.1,
            note=where,
        ),
        *_transfer_rows(series, f"the blobs of that build, {where}"),
        Row(
            GROUP, vs_raw, baseline=series["raw-down"], goal="<= 1.5x", met=ratio <= 1.5, note="the goal row"
        ),
    ]


def _series(https: tuple[str, str] | None) -> dict[str, Series]:
    labels = {
        "push": "push entries (push_entry)",
        "raw-up": "raw upload (s3transfer)",
        "pull": "pull entries (library)",
        "raw-down": "raw download (s3transfer)",
        "raw-verify": "raw download + sha256 check",
    }
    if https:
        labels |= {"pull-https": "pull entries, HTTPS", "raw-down-https": "raw download, HTTPS"}
    return {name: Series(label) for name, label in labels.items()}


def _add_cache_table(project: Path, bench: _Bench) -> None:
    table = (
        f'\n[cache]\nremote = "s3://bench/warm"\nendpoint_url = "{bench.endpoint}"\n'
        f'region = "us-east-1"\ntrusted_keys = ["{bench.extra["BENCH_TRUSTED_KEY"]}"]\n'
    )
    with open(project / "eif.toml", "a", encoding="utf-8") as fh:
        fh.write(table)


def _transfer_rows(series: dict[str, Series], what: str) -> list[Row]:
    def pair(ours: str, raw: str, goal: str = "", check: Callable[[float], bool] | None = None) -> list[Row]:
        ratio = series[ours].median / series[raw].median
        met = check(ratio) if check else None
        return [
            Row(GROUP, series[raw], note=what),
            Row(GROUP, series[ours], baseline=series[raw], goal=goal, met=met),
        ]

    out = pair("push", "raw-up") + pair("pull", "raw-down", "<= 1.5x", lambda r: r <= 1.5)
    out.append(Row(GROUP, series["raw-verify"], baseline=series["raw-down"], note="then a sha256 pass"))
    if "pull-https" in series:
        out += pair("pull-https", "raw-down-https", "<= 1.5x", lambda r: r <= 1.5)
    return out
