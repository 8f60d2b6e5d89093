"""A real-size app: a debootstrap'd Debian system given to eifbuild as an OCI image layout.

The rootfs (cached in the data dir) is ``debootstrap --variant=minbase`` of Debian bookworm with
``--include`` packages (python3, Node.js with npm, Go's sources, Django, vim's runtime: a few hundred
MB of mostly small files). Maintainer scripts that fail in a chroot without /proc leave packages
unconfigured, which changes nothing for the files; apt's caches are removed. It becomes a one-layer
OCI layout (a gzip tar of the tree, written with GNU tar). The project is built with ``doit eif``:

- *cold*: an empty store (the layout's blobs are imported, the layer unpacked into the rootfs
  model, both ramdisks and the EIF written);
- *no-op*: ``doit eif`` again on that store;
- *the alternative*: what a user has without eifbuild, from the same layout: GNU tar unpacks the
  layer, GNU cpio + gzip archive the tree (``find | sort | cpio -o -H newc | gzip -n``), then an
  eif_build-equivalent pack (``eifbuild pack``: eif_build is not installable here) with the same
  kernel and a bootstrap ramdisk.

Needs ``debootstrap`` (as root, and a Debian mirror) the first time; skipped otherwise.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import textwrap
from typing import TYPE_CHECKING, Final

from harness import MIB, CommandFailed, Sample, Series, interleaved, progress, run
from report import Row
from suite_pack import CMDLINE, inputs

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

SUITE: Final = "bookworm"
MIRROR: Final = "http://deb.debian.org/debian"
PACKAGES: Final = ("python3", "npm", "golang-1.19-src", "python3-django", "vim-runtime")
EIF_TOML: Final = """\
    [eif]
    name = "debian-app"
    version = "0.1.0"
    arch = ["x86_64"]
    build_time = "2024-01-01T00:00:00+00:00"
    cmdline = "console=ttyS0"

    [bootstrap]
    kernel = { path = "kernel.bin" }
    init = { path = "init.bin" }
    nsm = "none"

    [app]
    oci = "image:app"
    cmd = ["/usr/bin/python3", "-c", "print('app')"]
"""
DODO: Final = "from eifbuild.tasks import *  # noqa: F403\n"
APP_TASKS: Final = frozenset({"ramdisk:app:x86_64", "eif:x86_64"})


def rootfs(opts: Options) -> Path | None:
    """The cached Debian rootfs, made with debootstrap when missing (None when it cannot be)."""
    root = opts.data / "realapp" / "rootfs"
    done = root.with_name("rootfs.done")
    if done.exists():
        return root
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.path.exists(debootstrap) or os.geteuid() != 0:
        return None
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    progress(f"realapp: debootstrap {SUITE} with {', '.join(PACKAGES)} (minutes)")
    cmd = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR]
    done_ok = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    if not (root / "usr" / "bin").is_dir():
        progress(f"realapp: debootstrap failed (exit {done_ok.returncode})")
        return None
    for junk in ("var/cache/apt", "var/lib/apt/lists", "debootstrap"):
        shutil.rmtree(root / junk, ignore_errors=True)
    done.touch()
    return root


def layout(opts: Options, tree: Path) -> Path:
    """A one-layer OCI image layout of ``tree`` (tag ``app``), cached beside it."""
    image = tree.with_name("image")
    done = tree.with_name("image.done")
    if done.exists():
        return image
    shutil.rmtree(image, ignore_errors=True)
    blobs = image / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    progress("realapp: writing the OCI layout")
    layer = image / "layer.tar.gz"
    tar = ["tar", "-C", str(tree), "--sort=name", "--numeric-owner", "-cf", "-", "."]
    with layer.open("wb") as out:
        tar_proc = subprocess.Popen(tar, stdout=subprocess.PIPE)
        assert tar_proc.stdout is not None
        diff_id = hashlib.sha256()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
            while chunk := tar_proc.stdout.read(MIB):
                diff_id.update(chunk)
                gz.write(chunk)
        if tar_proc.wait() != 0:
            msg = "tar of the Debian rootfs failed"
            raise CommandFailed(msg)
    layer_digest = _blob_from_file(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id.hexdigest()}"]},
    }
    config_desc = _blob(blobs, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [{**layer_digest, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}],
    }
    manifest_desc = _blob(blobs, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": "app"}
    (image / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    (image / "index.json").write_text(json.dumps({**index, "manifests": [manifest_desc]}))
    done.touch()
    return image


def _blob(blobs: Path, data: bytes, media_type: str) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def _blob_from_file(blobs: Path, path: Path) -> dict[str, object]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(MIB):
            digest.update(chunk)
    size = path.stat().st_size
    path.rename(blobs / digest.hexdigest())
    return {"digest": f"sha256:{digest.hexdigest()}", "size": size}


def _ran(sample: Sample) -> set[str]:
    return {line[3:].strip() for line in sample.stdout.splitlines() if line.startswith(".  ")}


def _tree_stats(tree: Path) -> tuple[int, int]:
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            size += st.st_size
    return entries, size


def rows(opts: Options) -> list[Row]:
    tree = rootfs(opts)
    if tree is None:
        progress("realapp: no Debian rootfs (debootstrap missing, not root, or it failed): skipped")
        return []
    image = layout(opts, tree)
    entries, size = _tree_stats(tree)
    given = inputs(opts.data, 32)
    # two copies of the project: the cold builds publish into their own build/ (publishing into the
    # no-op's would make its next run publish again)
    projects = {name: opts.work / f"realapp-{name}" for name in ("cold", "warm")}
    for project in projects.values():
        project.mkdir(parents=True)
        (project / "eif.toml").write_text(textwrap.dedent(EIF_TOML))
        (project / "dodo.py").write_text(DODO)
        os.symlink(image, project / "image")
        shutil.copyfile(given.kernel, project / "kernel.bin")
        (project / "init.bin").write_bytes(b"\x7fELF stand-in init\n" * 100)
    stores = opts.work / "realapp-stores"
    counter = iter(range(1_000_000))
    warm_store = stores / "warm"

    def doit(project: Path, store: Path) -> Sample:
        env = opts.env({"EIFBUILD_CACHE": str(store), "EIFBUILD_SOURCES_DIR": str(stores / "sources")})
        return run([opts.python, "-m", "doit", "eif"], cwd=project, env=env, capture=True)

    def cold() -> Sample:
        shutil.rmtree(projects["cold"] / "build", ignore_errors=True)
        store = stores / f"cold-{next(counter)}"
        sample = doit(projects["cold"], store)
        _rmtree(store)
        return sample

    def noop() -> Sample:
        sample = doit(projects["warm"], warm_store)
        if ran := _ran(sample):
            msg = f"the real app's no-op ran {sorted(ran)}"
            raise CommandFailed(msg)
        return sample

    alt = opts.work / "realapp-alt"
    script = textwrap.dedent(
        """\
        set -e
        mkdir "$1/tree" && tar -C "$1/tree" -xzf "$2"
        (cd "$1/tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n) > "$1/app.cpio.gz"
        "$0" -m eifbuild pack --kernel "$3" --cmdline "$5" --ramdisk "$4" --ramdisk "$1/app.cpio.gz" \\
            --output "$1/app.eif" --name debian-app --version 0.1.0 > /dev/null
        """
    )
    layer = next(p for p in (image / "blobs" / "sha256").iterdir() if p.stat().st_size > MIB)

    def alternative() -> Sample:
        shutil.rmtree(alt, ignore_errors=True)
        alt.mkdir(parents=True)
        args = [opts.python, str(alt), str(layer), str(given.kernel), str(given.ramdisks[0]), CMDLINE]
        sample = run(["sh", "-c", script, *args], env=opts.env())
        shutil.rmtree(alt, ignore_errors=True)
        return sample

    progress(f"realapp: Debian rootfs of {entries} entries, {size / MIB:.0f} MiB; first build")
    first = doit(projects["warm"], warm_store)
    commands: list[tuple[str, Callable[[], Sample]]] = [
        ("tar -x + GNU cpio + gzip + pack", alternative),
        ("doit eif, cold (empty store)", cold),
        ("doit eif, no-op", noop),
    ]
    progress(f"realapp: {opts.repeat} runs each of {', '.join(label for label, _ in commands)}")
    series = interleaved(opts.repeat, commands, warmup=False, between=os.sync)
    _rmtree(stores)
    for project in projects.values():
        shutil.rmtree(project, ignore_errors=True)
    group = f"Debian app, {entries} entries, {size / MIB:.0f} MiB"
    base, cold_series, noop_series = series.values()
    note = f"ran: {', '.join(sorted(_ran(first)))}"
    return [
        Row(group, base, note="from the same OCI layer"),
        Row(group, cold_series, baseline=base, note=note),
        Row(group, noop_series, baseline=base),
        *_first(group, first),
    ]


def _first(group: str, sample: Sample) -> list[Row]:
    return [Row(group, Series("doit eif, first build (untimed warm-up)", [sample]))]


def _rmtree(path: Path) -> None:
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)  # noqa: S103 - store entries are read-only
    shutil.rmtree(path, ignore_errors=True)
