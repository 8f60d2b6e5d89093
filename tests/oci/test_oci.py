"""Resolving OCI images from layouts and archives: selection, verification, the store, the CLI."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import require_tool
from oci_helpers import (
    CONFIG,
    Image,
    Layout,
    M,
    compress,
    jbytes,
    layer,
    sample_image,
    sha,
    tar_dir,
    write_docker_save,
    write_layout,
)

from eifbuild.cli import main
from eifbuild.errors import (
    ArchiveError,
    ConfigError,
    FileAccessError,
    HashMismatch,
    InputError,
    LocatedError,
    StoreError,
)
from eifbuild.oci import OciImage, app_command, parse_image_ref, resolve_image, rootfs_entries
from eifbuild.oci._importer import Importer, layer_step
from eifbuild.oci._registry import RegistryRef, credentials, parse_challenge, parse_ref
from eifbuild.oci._transport import LayoutDir
from eifbuild.oci.image import LocalRef
from eifbuild.ramdisk import layout as ramdisk
from eifbuild.ramdisk import newc as cpio
from eifbuild.store import Store


def app_ramdisk(image: OciImage, store: Store) -> bytes:
    argv, env = app_command(image)
    entries = ramdisk.app_entries(rootfs_entries(image, store), argv, env, modes="preserve")
    buf = io.BytesIO()
    cpio.write_cpio(entries, buf, mtime=0)
    return buf.getvalue()


def store_is_empty(store: Store) -> bool:
    tmp = store.root / "tmp"
    return not list(store.keys()) and (not tmp.exists() or not list(tmp.iterdir()))


# -- references --------------------------------------------------------------------------------------
def test_parse_image_ref(tmp_path: Path) -> None:
    (tmp_path / "lay").mkdir()
    (tmp_path / "img.tar").write_bytes(b"")
    digest = "sha256:" + "ab" * 32
    assert parse_image_ref("lay", tmp_path) == LocalRef(tmp_path / "lay")
    assert parse_image_ref("lay:v1", tmp_path) == LocalRef(tmp_path / "lay", tag="v1")
    assert parse_image_ref(f"lay@{digest}", tmp_path) == LocalRef(tmp_path / "lay", digest=digest)
    assert parse_image_ref("img.tar:test/img:v1", tmp_path) == LocalRef(
        tmp_path / "img.tar", tag="test/img:v1"
    )
    assert parse_image_ref(f"{tmp_path}/lay", Path("/elsewhere")) == LocalRef(tmp_path / "lay")
    assert parse_image_ref(f"127.0.0.1:5000/hello@{digest}", tmp_path) == RegistryRef(
        "127.0.0.1:5000", "hello", None, digest
    )
    assert parse_image_ref(f"docker://alpine:3.20@{digest}", tmp_path) == RegistryRef(
        "docker.io", "library/alpine", "3.20", digest
    )
    assert parse_ref("ghcr.io/org/app:1.0") == RegistryRef("ghcr.io", "org/app", "1.0")
    assert parse_ref("localhost/app") == RegistryRef("localhost", "app")
    assert str(parse_ref("user/app")) == "docker.io/user/app"
    assert parse_ref("alpine").api_host == "registry-1.docker.io"


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        (
            "missing.tar",
            FileAccessError,
            "image 'missing.tar': no such file or directory (relative paths start at {tmp})",
        ),
        (
            "./nope",
            FileAccessError,
            "image './nope': no such file or directory (relative paths start at {tmp})",
        ),
        (
            "host.io/App@sha256:00",
            InputError,
            "image reference 'host.io/App@sha256:00': bad digest 'sha256:00': expected sha256: and 64 hex digits",
        ),
        (
            "host.io/App",
            InputError,
            "image reference 'host.io/App': bad repository name 'App' (lowercase, digits, '._-/')",
        ),
        ("host.io/app:bad!tag", InputError, "image reference 'host.io/app:bad!tag': bad tag 'bad!tag'"),
    ],
)
def test_bad_references(tmp_path: Path, ref: str, error: type[LocatedError], message: str) -> None:
    with pytest.raises(error) as exc:
        parse_image_ref(ref, tmp_path)
    assert str(exc.value) == message.format(tmp=tmp_path)


def test_a_tag_without_digest_is_refused_in_builds(tmp_path: Path, store: Store) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_image("127.0.0.1:5000/hello:latest", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        "image '127.0.0.1:5000/hello:latest' is not pinned by digest, so the build would not be "
        "reproducible: write 127.0.0.1:5000/hello@sha256:… or run 'eifbuild lock --trust-on-first-use' "
        "to resolve the tag and record its digest in eif.lock"
    )
    assert store_is_empty(store)


# -- sources give the same image ---------------------------------------------------------------------
def test_layout_archive_and_docker_save_give_the_same_ramdisk(tmp_path: Path, store: Store) -> None:
    write_layout(tmp_path / "gz", [sample_image(compression="gzip")], tag="v1")
    write_layout(tmp_path / "zst", [sample_image(compression="zstd")], tag="v1")
    write_layout(tmp_path / "raw", [sample_image(compression="none")], tag="v1")
    tar_dir(tmp_path / "gz", tmp_path / "oci.tar")
    write_docker_save(tmp_path / "save.tar", sample_image())
    refs = {
        "gz": "oci-layout",
        "gz:v1": "oci-layout",
        "zst": "oci-layout",
        "raw": "oci-layout",
        "oci.tar": "oci-archive",
        "oci.tar:v1": "oci-archive",
        "save.tar": "docker-archive",
        "save.tar:test/img:v1": "docker-archive",
    }
    results = set()
    for ref, kind in refs.items():
        image = resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert image.source == kind
        assert image.argv == ("/bin/app", "--serve", "8080")
        assert image.env == ("PATH=/usr/local/bin:/bin", "GREETING=hi there")
        results.add((image.rootfs_digest, hashlib.sha256(app_ramdisk(image, store)).hexdigest()))
    assert len(results) == 1


def test_skopeo_archives(tmp_path: Path, store: Store) -> None:
    skopeo = require_tool("skopeo")
    built = write_layout(tmp_path / "lay", [sample_image()], tag="v1")
    for dest in ("oci-archive:oa.tar:v1", "docker-archive:da.tar:test/img:v1"):
        subprocess.run(
            [skopeo, "copy", "--quiet", f"oci:{tmp_path / 'lay'}:v1", dest], cwd=tmp_path, check=True
        )
    layout = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    oa = resolve_image("oa.tar", arch="x86_64", store=store, project_dir=tmp_path)
    da = resolve_image("da.tar:test/img:v1", arch="x86_64", store=store, project_dir=tmp_path)
    assert layout.manifest_digest == oa.manifest_digest == built.digest
    assert da.source == "docker-archive"
    assert da.rootfs_digest == layout.rootfs_digest
    assert app_ramdisk(layout, store) == app_ramdisk(da, store)


def test_second_resolve_reads_only_the_store(tmp_path: Path, store: Store) -> None:
    built = write_layout(tmp_path / "lay", [sample_image()], tag="v1")
    first = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    keys = sorted(store.keys())
    assert len(keys) == 5  # manifest, config, three layers
    shutil.rmtree(tmp_path / "lay" / "blobs")
    again = resolve_image(f"lay@{built.digest}", arch="x86_64", store=store, project_dir=tmp_path)
    assert again == OciImage(**{**first.__dict__, "ref": f"lay@{built.digest}"})
    assert sorted(store.keys()) == keys
    assert app_ramdisk(again, store) == app_ramdisk(first, store)


def test_layers_are_shared_across_images(tmp_path: Path, store: Store) -> None:
    lay = Layout(tmp_path / "lay")
    one = lay.add([Image([[M("base")], [M("one")]])], tag="one")
    two = lay.add([Image([[M("base")], [M("two")]])], tag="two")
    assert one.layer_digests[0] == two.layer_digests[0]
    first = resolve_image("lay:one", arch="x86_64", store=store, project_dir=tmp_path)
    resolve_image("lay:two", arch="x86_64", store=store, project_dir=tmp_path)
    kinds = sorted(e.kind for e in store.entries())
    assert kinds == ["oci-blob"] * 4 + ["oci-layer"] * 3
    assert first.layers[0].digest == one.layer_digests[0]
    entry = store.get(layer_step(first.layers[0]).key)
    assert entry is not None
    assert entry.digest("layer.tar") == hashlib.sha256(layer([M("base")])).hexdigest()


# -- selection ---------------------------------------------------------------------------------------
def test_multi_arch_index_picks_the_eif_arch(tmp_path: Path, store: Store) -> None:
    images = [
        sample_image("amd64"),
        Image([[M("arm")]], arch="arm64", variant="v8"),
        Image([[M("s390")]], arch="s390x"),
    ]
    built = write_layout(tmp_path / "lay", images, tag="multi")
    x86 = resolve_image("lay:multi", arch="x86_64", store=store, project_dir=tmp_path)
    arm = resolve_image("lay", arch="aarch64", store=store, project_dir=tmp_path)
    assert (x86.index_digest, x86.manifest_digest, x86.platform) == (
        built.digest,
        built.manifests["amd64"],
        "linux/amd64",
    )
    assert (arm.index_digest, arm.manifest_digest, arm.platform) == (
        built.digest,
        built.manifests["arm64"],
        "linux/arm64/v8",
    )


def test_missing_platform_is_a_clear_error(tmp_path: Path, store: Store) -> None:
    built = write_layout(
        tmp_path / "lay", [Image([[M("x")]], arch="arm64"), Image([[M("y")]], arch="arm", variant="v7")]
    )
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'lay'}: {built.digest}: no linux/amd64 image for arch x86_64 "
        "(the index has: linux/arm/v7, linux/arm64)"
    )
    assert store_is_empty(store)


def test_single_manifest_for_another_platform_is_refused(tmp_path: Path, store: Store) -> None:
    built = write_layout(tmp_path / "lay", [Image([[M("x")]], arch="arm64")])
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'lay'}: manifest {built.digest}: the image is for linux/arm64, but arch x86_64 needs linux/amd64"
    )
    assert store_is_empty(store)


def test_choosing_among_several_images(tmp_path: Path, store: Store) -> None:
    lay = Layout(tmp_path / "lay")
    lay.add([Image([[M("one")]])], tag="one")
    two = lay.add([Image([[M("two")]])], tag="two")
    lay.add([Image([[M("anon")]])])
    with pytest.raises(InputError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert (
        str(exc.value)
        == f"{tmp_path / 'lay'}: holds 3 images: pick one as PATH:TAG or PATH@sha256:… (tags: one, two)"
    )
    with pytest.raises(InputError) as exc:
        resolve_image("lay:three", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == f"{tmp_path / 'lay'}: no image tagged 'three' (tags: one, two)"
    assert (
        resolve_image(f"lay@{two.digest}", arch="x86_64", store=store, project_dir=tmp_path).manifest_digest
        == two.digest
    )


# -- verification: every failure leaves the store as it was ------------------------------------------
def test_digest_mismatch(tmp_path: Path, store: Store) -> None:
    built = write_layout(tmp_path / "lay", [sample_image()])
    blob = tmp_path / "lay" / "blobs" / "sha256" / built.layer_digests[1][7:]
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(HashMismatch) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"layer {built.layer_digests[1]} (layer 1 of the image): hash mismatch: expected "
        f"{built.layer_digests[1]}, got {sha(bytes(data))}"
    )
    assert store_is_empty(store)


def test_missing_blob(tmp_path: Path, store: Store) -> None:
    built = write_layout(tmp_path / "lay", [sample_image()])
    (tmp_path / "lay" / "blobs" / "sha256" / built.layer_digests[2][7:]).unlink()
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"{tmp_path / 'lay'}: blob {built.layer_digests[2]} is missing (expected blobs/sha256/{built.layer_digests[2][7:]})"
    )
    assert store_is_empty(store)


def _manifest_with(tmp_path: Path, layer_blob: bytes, diff_id: str, size: int | None = None) -> str:
    lay = Layout(tmp_path / "lay")
    config = lay.descriptor(
        "application/vnd.oci.image.config.v1+json",
        jbytes(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": CONFIG,
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ),
    )
    layer_desc = lay.descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer_blob)
    if size is not None:
        layer_desc["size"] = size
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer_desc],
    }
    lay.index.append(lay.descriptor("application/vnd.oci.image.manifest.v1+json", jbytes(manifest)))
    lay.write_index()
    return str(layer_desc["digest"])


def test_diff_id_mismatch(tmp_path: Path, store: Store) -> None:
    raw = layer([M("bin/app", data=b"x", mode=0o755)])
    wrong = "sha256:" + "0" * 64
    digest = _manifest_with(tmp_path, compress(raw, "gzip"), wrong)
    with pytest.raises(HashMismatch) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == (
        f"layer {digest} (layer 0 of the image): uncompressed (gzip): hash mismatch: expected {wrong}, got {sha(raw)}"
    )
    assert store_is_empty(store)


def test_size_mismatch(tmp_path: Path, store: Store) -> None:
    raw = layer([M("bin/app", data=b"x", mode=0o755)])
    blob = compress(raw, "gzip")
    digest = _manifest_with(tmp_path, blob, sha(raw), size=len(blob) - 1)
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert (
        str(exc.value)
        == f"layer {digest} (layer 0 of the image): more than the {len(blob) - 1} bytes expected"
    )
    assert store_is_empty(store)


def test_corrupt_gzip_with_matching_digest(tmp_path: Path, store: Store) -> None:
    raw = layer([M("bin/app", data=b"x" * 5000, mode=0o755)])
    blob = compress(raw, "gzip")[:-20]
    digest = _manifest_with(tmp_path, blob, sha(raw))
    with pytest.raises(
        ArchiveError, match=rf"^layer {digest} \(layer 0 of the image\): corrupt gzip stream: "
    ):
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert store_is_empty(store)


@pytest.mark.parametrize(
    ("members", "detail"),
    [
        (
            [M("../../etc/cron.d/x", data=b"evil")],
            "member '../../etc/cron.d/x': path '../../etc/cron.d/x' contains '..'",
        ),
        (
            [M("lib", "symlink", target="../../../usr/lib")],
            "member 'lib': symlink target '../../../usr/lib' points outside",
        ),
    ],
    ids=["traversal", "escaping-symlink"],
)
def test_malicious_layer_leaves_nothing(tmp_path: Path, store: Store, members: list[M], detail: str) -> None:
    built = write_layout(tmp_path / "lay", [Image([[M("bin", "dir"), M("bin/app", data=b"ok")], members])])
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value).startswith(f"layer {built.layer_digests[1]}, {detail}")
    assert store_is_empty(store)


def test_not_a_layout_or_archive(tmp_path: Path, store: Store) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with tarfile.open(tmp_path / "other.tar", "w") as tar:
        info = tarfile.TarInfo("README")
        tar.addfile(info, io.BytesIO(b""))
    cases: dict[str, tuple[type[InputError], str]] = {
        "empty": (
            InputError,
            f"{tmp_path / 'empty'}: not an OCI image layout: no index.json in this directory",
        ),
        "other.tar": (
            ArchiveError,
            f"{tmp_path / 'other.tar'}: not an image archive: no index.json (OCI) or manifest.json (docker save) inside",
        ),
    }
    for ref, (error, message) in cases.items():
        with pytest.raises(error) as exc:
            resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert str(exc.value) == message
    with pytest.raises(ArchiveError, match=r"junk.tar: not a readable image archive: "):
        resolve_image("junk.tar", arch="x86_64", store=store, project_dir=tmp_path)


# -- config → cmd / env ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "argv"),
    [
        ({"Entrypoint": ["/bin/app"], "Cmd": ["-x"]}, ("/bin/app", "-x")),
        ({"Entrypoint": ["/bin/app"]}, ("/bin/app",)),
        ({"Cmd": ["/bin/sh", "-c", "echo hi"]}, ("/bin/sh", "-c", "echo hi")),
        ({"Entrypoint": None, "Cmd": ["/bin/true"]}, ("/bin/true",)),
    ],
)
def test_entrypoint_and_cmd_combine(
    tmp_path: Path, store: Store, config: dict[str, object], argv: tuple[str, ...]
) -> None:
    write_layout(tmp_path / "lay", [Image([[M("x")]], config=config)])
    image = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert image.argv == argv
    assert app_command(image)[0] == argv


def test_overrides_and_unsupported_settings(tmp_path: Path, store: Store) -> None:
    config = {"Cmd": ["/bin/app"], "Env": ["A=1", "B=2", "BROKEN"], "WorkingDir": "/srv", "User": "1000:1000"}
    write_layout(tmp_path / "lay", [Image([[M("x")]], config=config)])
    image = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert image.env == ("A=1", "B=2")
    assert image.unsupported == (
        "WorkingDir '/srv' is ignored: AWS's init starts the command in /",
        "User '1000:1000' is ignored: AWS's init runs the command as root",
    )
    assert app_command(image, ["/bin/other", "x"], {"B": "3", "C": "4"}) == (
        ("/bin/other", "x"),
        ("A=1", "B=3", "C=4"),
    )
    assert app_command(image, None, [("A", "0")]) == (("/bin/app",), ("A=0", "B=2"))


def test_image_without_a_command_needs_app_cmd(tmp_path: Path, store: Store) -> None:
    write_layout(tmp_path / "lay", [Image([[M("x")]], config={"Env": ["A=1"]})])
    image = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    with pytest.raises(ConfigError) as exc:
        app_command(image)
    assert str(exc.value) == "image 'lay' has neither Entrypoint nor Cmd: set [app] cmd"
    assert app_command(image, ["/bin/x"]) == (("/bin/x",), ("A=1",))


# -- registry helpers that need no server -------------------------------------------------------------
def test_challenge_and_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'
    ) == (
        "bearer",
        {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull"},
    )
    for var in (
        "EIFBUILD_REGISTRY_USERNAME",
        "EIFBUILD_REGISTRY_PASSWORD",
        "EIFBUILD_REGISTRY_AUTH_FILE",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
    ):
        monkeypatch.delenv(var, raising=False)
    assert credentials("ghcr.io") is None
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "auths": {
                    "ghcr.io": {"auth": base64.b64encode(b"bob:pw:with:colons").decode()},
                    "https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
                }
            }
        )
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert credentials("ghcr.io") == ("bob", "pw:with:colons")
    assert credentials("docker.io") == ("hub", "hubpw")
    assert credentials("quay.io") is None
    monkeypatch.setenv("EIFBUILD_REGISTRY_USERNAME", "env")
    monkeypatch.setenv("EIFBUILD_REGISTRY_PASSWORD", "envpw")
    assert credentials("ghcr.io") == ("env", "envpw")


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_inspect_and_unpack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    built = write_layout(tmp_path / "lay", [sample_image(), sample_image("arm64")], tag="v1")
    assert main(["oci", "inspect", "lay:v1", "--arch", "aarch64", "--json", "--cache", "c"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"] == built.manifests["arm64"]
    assert info["index"] == built.digest
    assert info["argv"] == ["/bin/app", "--serve", "8080"]
    assert info["unsupported"] == ["WorkingDir '/srv' is ignored: AWS's init starts the command in /"]
    assert main(["oci", "inspect", "lay", "--arch", "x86_64", "--cache", "c"]) == 0
    out = capsys.readouterr().out
    assert f"manifest:    {built.manifests['amd64']}\n" in out
    assert (
        'argv:        ["/bin/app", "--serve", "8080"]  (Entrypoint ["/bin/app"] + Cmd ["--serve", "8080"])\n'
        in out
    )
    assert main(["oci", "unpack", "lay", "--arch", "x86_64", "--cache", "c", "-o", "out"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [  # no device node, no setuid bit unless asked: listed
        "skipped: bin/su: setuid/setgid bits of 4755",
        "skipped: dev/loop0: block device 7:0",
        "skipped: dev/null: char device 1:3",
        f"25 paths of {built.manifests['amd64']} (linux/amd64) written to out",
    ]
    assert "left out (--preserve-special)" in captured.err
    assert (tmp_path / "out" / "bin" / "app").read_bytes() == b"#!/bin/sh\necho app v2\n"
    assert (tmp_path / "out" / "bin" / "su").stat().st_mode & 0o7777 == 0o755
    assert not os.path.lexists(tmp_path / "out" / "dev" / "null")
    assert (
        main(["oci", "unpack", "lay", "--arch", "x86_64", "--cache", "c", "-o", "all", "--preserve-special"])
        == 0
    )
    assert "skipped" not in capsys.readouterr().out
    assert (tmp_path / "all" / "bin" / "su").stat().st_mode & 0o7777 == 0o4755
    null = os.lstat(tmp_path / "all" / "dev" / "null")
    if os.geteuid() == 0:  # else an empty file stands for it, with a warning
        assert stat.S_ISCHR(null.st_mode)
        assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert main(["oci", "unpack", "lay", "--cache", "c", "-o", "out"]) == 2
    assert capsys.readouterr().err.endswith("\nerror: out: unpack target is not empty\n")
    assert main(["oci", "inspect", "nope.tar", "--cache", "c"]) == 2
    assert (
        capsys.readouterr().err
        == f"error: image 'nope.tar': no such file or directory (relative paths start at {tmp_path})\n"
    )


# -- malformed documents -----------------------------------------------------------------------------
def _layout_with_docs(
    tmp_path: Path, manifest_patch: dict[str, object], config_patch: dict[str, object]
) -> dict[str, str]:
    """A one-layer image whose manifest and config get ``*_patch`` merged in; returns the digests."""
    lay = Layout(tmp_path / "lay")
    raw = layer([M("x")])
    config: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/x"]},
        "rootfs": {"type": "layers", "diff_ids": [sha(raw)]},
    }
    config.update(config_patch)
    config_desc = lay.descriptor("application/vnd.oci.image.config.v1+json", jbytes(config))
    manifest: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [lay.descriptor("application/vnd.oci.image.layer.v1.tar", raw)],
    }
    manifest.update(manifest_patch)
    desc = lay.descriptor(str(manifest.get("mediaType", "")), jbytes(manifest))
    lay.index.append(desc)
    lay.write_index()
    return {"manifest": desc["digest"], "config": config_desc["digest"]}


HELM = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


@pytest.mark.parametrize(
    ("manifest_patch", "config_patch", "message"),
    [
        (
            {"schemaVersion": 1},
            {},
            "{lay}: {manifest}: Docker schema 1 manifests are not supported (re-push the image with a current tool)",
        ),
        (
            {"mediaType": "application/vnd.example+json"},
            {},
            "{lay}: {manifest}: not an image index or manifest (media type 'application/vnd.example+json')",
        ),
        (
            {"layers": [{"mediaType": HELM, "digest": "sha256:" + "0" * 64, "size": 1}]},
            {},
            f"{{lay}}: manifest {{manifest}}: layer 0 has media type '{HELM}': not a container image layer",
        ),
        (
            {"layers": [{"mediaType": "x", "digest": "md5:00"}]},
            {},
            "{lay}: manifest {manifest} layers[0]: bad digest 'md5:00': expected sha256: and 64 hex digits",
        ),
        (
            {},
            {"rootfs": {"diff_ids": []}},
            "{lay}: manifest {manifest}: 1 layers but config {config} lists 0 diff_ids",
        ),
        (
            {},
            {"rootfs": {"diff_ids": ["nope"]}},
            "{lay}: manifest {manifest}: config diff_ids[0] is not a digest: 'nope'",
        ),
        (
            {},
            {"config": {"Cmd": "/bin/sh -c x"}},
            "{lay}: config {config}: config.Cmd must be a list of strings",
        ),
        ({}, {"config": ["Cmd"]}, "{lay}: config {config}: 'config' must be an object"),
        (
            {},
            {"os": "windows"},
            "{lay}: manifest {manifest}: the image is for windows/amd64, but arch x86_64 needs linux/amd64",
        ),
    ],
    ids=[
        "schema1",
        "media-type",
        "helm-layer",
        "bad-digest",
        "diff-id-count",
        "diff-id-value",
        "cmd-string",
        "config-list",
        "windows",
    ],
)
def test_malformed_documents(
    tmp_path: Path,
    store: Store,
    manifest_patch: dict[str, object],
    config_patch: dict[str, object],
    message: str,
) -> None:
    digests = _layout_with_docs(tmp_path, manifest_patch, config_patch)
    with pytest.raises(ArchiveError) as exc:
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    assert str(exc.value) == message.format(lay=tmp_path / "lay", **digests)
    assert store_is_empty(store)


def test_layout_index_listing_platform_manifests(tmp_path: Path, store: Store) -> None:
    lay = Layout(tmp_path / "lay")
    amd, _ = lay.image(Image([[M("amd")]]))
    arm, _ = lay.image(Image([[M("arm")]], arch="arm64"))
    lay.index += [amd, arm]
    lay.write_index()
    assert (
        resolve_image("lay", arch="aarch64", store=store, project_dir=tmp_path).manifest_digest
        == arm["digest"]
    )
    assert (
        resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path).manifest_digest
        == amd["digest"]
    )


def test_layers_removed_from_the_store_are_reported(tmp_path: Path, store: Store) -> None:
    built = write_layout(tmp_path / "lay", [Image([[M("x")]])])
    image = resolve_image("lay", arch="x86_64", store=store, project_dir=tmp_path)
    store.remove(layer_step(image.layers[0]).key)
    with pytest.raises(StoreError) as exc:
        rootfs_entries(image, store)
    assert (
        str(exc.value)
        == f"layer {built.layer_digests[0]} of lay is not in the store (gc?): resolve the image again"
    )


def _docker_save(path: Path, manifest: object, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in {**members, "manifest.json": jbytes(manifest)}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_docker_save_errors(tmp_path: Path, store: Store) -> None:
    raw = layer([M("x")])
    config = jbytes({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": [sha(raw)]}})
    cases: list[tuple[object, dict[str, bytes], str]] = [
        ({"not": "a list"}, {}, "member 'manifest.json': expected a non-empty list of images"),
        (
            [{"Config": "c.json"}],
            {},
            "member 'manifest.json[0]': expected an object with 'Config' and 'Layers'",
        ),
        (
            [{"Config": "c.json", "Layers": []}],
            {"c.json": config},
            "member 'manifest.json[0]': 0 layers but the config lists 1 diff_ids",
        ),
        (
            [{"Config": "c.json", "Layers": ["l.tar"]}],
            {},
            "member 'c.json': 'c.json' is missing or not a regular file",
        ),
        (
            [{"Config": "c.json", "Layers": ["l.tar"]}],
            {"c.json": config},
            f"blob {sha(raw)} is missing (expected member 'l.tar')",
        ),
    ]
    for i, (manifest, members, message) in enumerate(cases):
        _docker_save(tmp_path / f"{i}.tar", manifest, members)
        with pytest.raises(ArchiveError) as exc:
            resolve_image(f"{i}.tar", arch="x86_64", store=store, project_dir=tmp_path)
        where = tmp_path / f"{i}.tar"
        assert str(exc.value) == (
            f"{where}: {message}" if message.startswith("blob") else f"{where}, {message}"
        )
    _docker_save(
        tmp_path / "gz.tar",
        [{"Config": "c.json", "Layers": ["l.tar"]}],
        {"c.json": config, "l.tar": compress(raw, "gzip")},
    )
    with pytest.raises(HashMismatch, match=rf"^layer {sha(raw)} \(layer 0 of the image\): hash mismatch"):
        resolve_image("gz.tar", arch="x86_64", store=store, project_dir=tmp_path)
    assert store_is_empty(store)


def test_staging_is_not_garbage_while_an_import_runs(tmp_path: Path, store: Store) -> None:
    write_layout(tmp_path / "lay", [Image([[M("x")]])])
    importer = Importer(store, LayoutDir(tmp_path / "lay"))
    work = importer.work
    assert work.parent == store.tmp_dir
    assert list(store.garbage()) == []
    importer.close()
    assert not work.exists()


def test_docker_save_25_archive_is_an_oci_archive_with_names(tmp_path: Path, store: Store) -> None:
    lay = Layout(tmp_path / "save")
    desc, _ = lay.image(sample_image())
    desc.pop("platform")
    desc["annotations"] = {
        "io.containerd.image.name": "docker.io/library/hello:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    lay.index.append(desc)
    lay.write_index()
    (tmp_path / "save" / "manifest.json").write_text("[]")  # docker writes both; the OCI index wins
    tar_dir(tmp_path / "save", tmp_path / "save.tar")
    for ref in ("save.tar:1.0", "save.tar:hello:1.0", "save.tar:docker.io/library/hello:1.0"):
        image = resolve_image(ref, arch="x86_64", store=store, project_dir=tmp_path)
        assert (image.source, image.manifest_digest) == ("oci-archive", desc["digest"])
