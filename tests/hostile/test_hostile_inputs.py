"""Issue #23's table of hostile inputs, each run in a child process under RLIMIT_AS, RLIMIT_FSIZE and
a timeout: one ``error:`` line naming the file, key or path, exit 2, no traceback, nothing written
outside the target directory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import textwrap
from pathlib import Path

import pytest
from hostile_helpers import (
    assert_clean,
    assert_refused,
    big_symlinks_ramdisk,
    child,
    cli,
    eif_with,
    metadata_with_custom,
    newc,
    plan,
    tree_files,
)
from s3_helpers import THROWAWAY_AWS_ENV

BASE = """\
[eif]
name = "hello"
arch = ["x86_64"]
cmdline = "console=ttyS0"
{eif}
[bootstrap]
kernel = {{ path = "kernel" }}
init = {{ path = "init" }}
[app]
{app}
cmd = ["/bin/app"]
"""


def project(root: Path, *, eif: str = "", app: str = 'files = { "/bin/app" = { text = "x" } }') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "kernel").write_bytes(b"kernel")
    (root / "init").write_bytes(b"init")
    config = root / "eif.toml"
    config.write_text(BASE.format(eif=eif, app=app))
    return config


# -- eif.toml ----------------------------------------------------------------------------------------
NAMES = {
    "climbs": '"../../../x/pwn"',
    "slash": '"a/b"',
    "dot-dot": '".."',
    "megabyte": '"' + "n" * 1_000_000 + '"',
    "control": '"a\\u0000b"',
}


@pytest.mark.parametrize("value", NAMES.values(), ids=NAMES.keys())
def test_the_name_is_one_short_safe_file_name(tmp_path: Path, value: str) -> None:
    config = project(tmp_path / "app")
    config.write_text(config.read_text().replace('name = "hello"', f"name = {value}"))
    assert_refused(plan(config), "eif.toml", "'eif.name'")
    assert not (tmp_path / "x").exists()


def test_the_output_must_be_a_directory(tmp_path: Path) -> None:
    config = project(tmp_path / "app", eif='output = "out"')
    (config.parent / "out").write_text("a file")
    assert_refused(plan(config), "'eif.output'", "not a directory")


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: "/dev/zero", "character device"),
        (lambda p: str(p.parent), "directory"),
        (lambda p: (os.mkfifo(p.parent / "fifo"), "fifo")[1], "FIFO"),
        (lambda p: (p.parent.joinpath("big.json").write_text('{"a":"' + "x" * 5000 + '"}'), "big.json")[1], "4096"),
        (lambda p: (p.parent.joinpath("deep.json").write_text('{"a":' + "[" * 500 + "]" * 500 + "}"), "deep.json")[1], "nested deeper"),
        (lambda p: (p.parent.joinpath("inf.json").write_text('{"a":1e999999999}'), "inf.json")[1], "too large"),
    ],
    ids=["dev-zero", "directory", "fifo", "too-big", "deep", "infinite"],
)
def test_the_metadata_file_is_a_small_regular_file_of_plain_json(tmp_path: Path, make, needle: str) -> None:
    config = project(tmp_path / "app")
    value = make(config)
    config.write_text(config.read_text().replace('name = "hello"', f'name = "hello"\nmetadata = "{value}"'))
    assert_refused(plan(config), "'eif.metadata'", needle)


def test_inline_metadata_over_4096_bytes_is_refused(tmp_path: Path) -> None:
    config = project(tmp_path / "app", eif=f'metadata = {{ a = "{"x" * 5000}" }}')
    assert_refused(plan(config), "'eif.metadata'", "4096")


@pytest.mark.parametrize("value", ["9223372036854775807", "4294967296", '"9999-01-01T00:00:00Z"'])
def test_a_build_time_past_the_cpio_format_is_refused(tmp_path: Path, value: str) -> None:
    config = project(tmp_path / "app", eif=f"build_time = {value}")
    assert_refused(plan(config), "'eif.build_time'")


@pytest.mark.parametrize("nested", ["a = " + "[" * 3000 + "]" * 3000, "a = " + "{b=" * 3000 + "1" + "}" * 3000])
def test_toml_nested_3000_deep_is_one_error(tmp_path: Path, nested: str) -> None:
    config = project(tmp_path / "app")
    config.write_text(nested + "\n" + config.read_text())
    assert_refused(plan(config), "eif.toml", "nested deeper than 128")


def test_an_eif_toml_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    os.mkfifo(tmp_path / "app" / "eif.toml")
    assert_refused(plan(tmp_path / "app" / "eif.toml"), "FIFO")


def test_arch_as_a_string_is_accepted_as_documented(tmp_path: Path) -> None:
    config = project(tmp_path / "app")
    config.write_text(config.read_text().replace('arch = ["x86_64"]', 'arch = "x86_64"'))
    assert_clean(plan(config), codes=(0,))


# -- paths outside the project -----------------------------------------------------------------------
def _outside(tmp_path: Path) -> Path:
    secret = tmp_path / "host" / "secret"
    secret.parent.mkdir(parents=True)
    secret.write_text("host file")
    return secret


@pytest.mark.parametrize("form", ["relative", "absolute", "symlink"])
def test_a_path_input_outside_the_project_needs_the_opt_in(tmp_path: Path, form: str) -> None:
    secret = _outside(tmp_path)
    root = tmp_path / "app"
    value = {"relative": "../host/secret", "absolute": str(secret), "symlink": "link"}[form]
    app = f'files = {{ "/bin/app" = {{ path = "{value}" }} }}'
    config = project(root, app=app)
    if form == "symlink":
        (root / "link").symlink_to(secret)
    assert_refused(plan(config), "'app.files", "outside the project", "allow_paths_outside")
    config.write_text(config.read_text().replace('name = "hello"', 'name = "hello"\nallow_paths_outside = true'))
    assert_clean(plan(config), codes=(0,))


def test_a_rootfs_that_is_a_symlink_out_of_the_project_is_refused(tmp_path: Path) -> None:
    host = _outside(tmp_path).parent
    root = tmp_path / "app"
    config = project(root, app='rootfs = "rootfs"')
    (root / "rootfs").symlink_to(host)
    assert_refused(plan(config), "'app.rootfs'", "outside the project")


# -- recipes and downloads ---------------------------------------------------------------------------
def _recipe(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f'[recipe]\nname = "r"\n[sources.k]\n{source}\n')
    return path


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        (f'url = "file:///dev/zero"\nsha256 = "{"0" * 64}"', "character device"),
        (f'url = "http://[::1"\nsha256 = "{"0" * 64}"', "url"),
        (f'path = "fifo"\nsha256 = "{"0" * 64}"', "FIFO"),
    ],
    ids=["dev-zero", "bad-ipv6", "fifo"],
)
def test_recipe_sources_that_never_end_are_refused(tmp_path: Path, source: str, needle: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    result = cli(["fetch", str(_recipe(tmp_path, source))], tmp_path)
    assert_refused(result, needle)
    assert sum(p.stat().st_size for p in tree_files(tmp_path) if p.is_file()) < 1 << 20


def test_a_download_without_a_declared_size_stops_at_the_cap(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\0" * (3 << 20))
    url = (tmp_path / "big").as_uri()
    result = cli(["fetch", str(_recipe(tmp_path, f'url = "{url}"\nsha256 = "{"0" * 64}"'))], tmp_path, {"EIFBUILD_MAX_INPUT_SIZE": "1M"})
    assert_refused(result, "more than 1048576 bytes", "EIFBUILD_MAX_INPUT_SIZE")


# -- EIFs ----------------------------------------------------------------------------------------------
CUSTOM = {
    "nested-500": b'{"a":' + b"[" * 500 + b"]" * 500 + b"}",
    "huge-float": b'{"a":1e999999999}',
    "huge-int": b'{"a":' + b"9" * 400 + b"}",
}
COMMANDS = {
    "describe": lambda e, o: ["describe", e],
    "verify": lambda e, o: ["verify", e],
    "pcrs": lambda e, o: ["pcrs", e],
    "diff": lambda e, o: ["diff", e, e + ".copy"],
    "extract": lambda e, o: ["extract", "-o", o, e],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("custom", CUSTOM.values(), ids=CUSTOM.keys())
def test_custom_metadata_nested_deep_or_out_of_range_is_one_error(tmp_path: Path, custom: bytes, command: str) -> None:
    eif = tmp_path / "bad.eif"
    eif.write_bytes(eif_with(metadata=metadata_with_custom(custom)))
    (tmp_path / "bad.eif.copy").write_bytes(eif.read_bytes())
    result = cli(COMMANDS[command](str(eif), str(tmp_path / "out")), tmp_path)
    assert_refused(result, "bad.eif", "metadata", codes=(1, 2) if command == "verify" else (2,))


@pytest.fixture(scope="module")
def symlink_eif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    eif = tmp_path_factory.mktemp("eif") / "links.eif"
    eif.write_bytes(eif_with(ramdisk=big_symlinks_ramdisk()))
    return eif


@pytest.mark.parametrize("command", ["diff", "extract-unpack", "describe", "pcrs"])
def test_symlink_targets_of_128_mib_stay_bounded(tmp_path: Path, symlink_eif: Path, command: str) -> None:
    other = tmp_path / "other.eif"
    other.write_bytes(eif_with())
    args = {
        "diff": ["diff", str(other), str(symlink_eif)],
        "extract-unpack": ["extract", "--unpack", "-o", str(tmp_path / "out"), str(symlink_eif)],
        "describe": ["describe", str(symlink_eif)],
        "pcrs": ["pcrs", str(symlink_eif)],
    }[command]
    result = cli(args, tmp_path)
    if command in {"describe", "pcrs"}:
        assert_clean(result, codes=(0,))  # they measure bytes; they do not read members
    else:
        assert_refused(result, "symlink target of 134217728 bytes")


def test_a_cpio_member_name_of_300_bytes_and_2100_levels(tmp_path: Path) -> None:
    long_name = "d/" + "x" * 300
    deep = "/".join(["d"] * 2100)
    ramdisk = newc([("d", 0o040755, b""), (long_name, 0o100644, b"x"), (deep, 0o100644, b"y")])
    eif = tmp_path / "names.eif"
    eif.write_bytes(eif_with(ramdisk=ramdisk))
    result = cli(["extract", "--unpack", "-o", str(tmp_path / "out"), str(eif)], tmp_path)
    assert_clean(result)
    for path in tree_files(tmp_path / "out"):
        assert path.resolve().is_relative_to(tmp_path / "out")


# -- OCI ---------------------------------------------------------------------------------------------
def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layout(root: Path, *, layer: bytes | None, layer_size: bool, blob: str) -> Path:
    """An OCI layout whose one layer blob is ``blob``: "fifo", "dev-zero" or "file" (``layer``)."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_digest = _sha(layer or b"layer")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}, "config": {}}).encode()
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest}
    if layer_size:
        desc["size"] = len(layer or b"layer")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config), "size": len(config)}, "layers": [desc]}).encode()
    for data in (config, manifest):
        (blobs / _sha(data)[7:]).write_bytes(data)
    target = blobs / layer_digest[7:]
    if blob == "fifo":
        os.mkfifo(target)
    elif blob == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.write_bytes(layer or b"")
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest), "platform": {"os": "linux", "architecture": "amd64"}}]}
    (root / "index.json").write_text(json.dumps(index))
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return root


@pytest.mark.parametrize("action", ["inspect", "unpack"])
@pytest.mark.parametrize("blob", ["fifo", "dev-zero"])
def test_an_oci_blob_that_is_a_fifo_or_a_device_is_refused(tmp_path: Path, action: str, blob: str) -> None:
    layout = _layout(tmp_path / "img", layer=None, layer_size=False, blob=blob)
    args = ["oci", action, str(layout)] + (["-o", str(tmp_path / "rootfs")] if action == "unpack" else [])
    result = cli(["--quiet", *args], tmp_path)
    if action == "inspect":
        assert_clean(result)  # inspect reads manifests and configs only
    else:
        assert_refused(result, "regular file")


def test_an_oci_layer_without_a_size_stops_at_the_cap(tmp_path: Path) -> None:
    layer = b"\0" * (3 << 20)
    layout = _layout(tmp_path / "img", layer=layer, layer_size=False, blob="file")
    result = cli(["oci", "unpack", str(layout), "-o", str(tmp_path / "rootfs")], tmp_path, {"EIFBUILD_MAX_INPUT_SIZE": "1M"})
    assert_refused(result, "no size declared", "EIFBUILD_MAX_INPUT_SIZE")


def _docker_save(path: Path, manifest: object, config: object) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, value in (("manifest.json", manifest), ("config.json", config)):
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


GOOD_CONFIG = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}
DOCKER_SAVES = {
    "layers-int": ([{"Config": "config.json", "Layers": [5]}], GOOD_CONFIG, "Layers[0]"),
    "repotags-int": ([{"Config": "config.json", "Layers": ["l.tar"], "RepoTags": 5}], GOOD_CONFIG, "RepoTags"),
    "rootfs-string": ([{"Config": "config.json", "Layers": ["l.tar"]}], {**GOOD_CONFIG, "rootfs": "x"}, "rootfs"),
    "diff-ids-int": ([{"Config": "config.json", "Layers": ["l.tar"]}], {**GOOD_CONFIG, "rootfs": {"diff_ids": [5]}}, "diff_ids[0]"),
    "deep-manifest": (b"[" * 100_000 + b"]" * 100_000, GOOD_CONFIG, "nested deeper"),
    "deep-config": ([{"Config": "config.json", "Layers": ["l.tar"]}], b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
    "nan-config": ([{"Config": "config.json", "Layers": ["l.tar"]}], b'{"a": NaN}', "NaN"),
}


@pytest.mark.parametrize(("manifest", "config", "needle"), DOCKER_SAVES.values(), ids=DOCKER_SAVES.keys())
def test_docker_save_archives_are_validated_by_type(tmp_path: Path, manifest: object, config: object, needle: str) -> None:
    archive = _docker_save(tmp_path / "save.tar", manifest, config)
    assert_refused(cli(["oci", "inspect", str(archive)], tmp_path), "save.tar", needle)


def test_an_image_archive_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "save.tar")
    assert_refused(cli(["oci", "inspect", str(tmp_path / "save.tar")], tmp_path), "FIFO")


# -- remote manifests and endpoints ------------------------------------------------------------------
def test_a_remote_manifest_nested_deep_is_refused_not_a_crash(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from eifbuild.store.remote.manifest import ManifestRefused, open_manifest
        for data in (b"[" * 200000, b'{"manifest":' + b'{"a":' * 100000, b'{"manifest": {"format": 1e999}}'):
            try:
                open_manifest(data, key="k", trusted={})
            except ManifestRefused as exc:
                print("refused:", exc)
        """
    )
    result = child(code, tmp_path)
    assert result.code == 0, result.err
    assert result.out.count("refused:") == 3


SILENT = """
    import socket, sys, threading, time
    from eifbuild.errors import RemoteCacheError
    from eifbuild.store.remote._s3 import S3Bucket
    from eifbuild.store.remote.config import parse_s3_url
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    bucket = S3Bucket(parse_s3_url("s3://bucket/prefix"), endpoint_url=f"http://127.0.0.1:{server.getsockname()[1]}")
    start = time.monotonic()
    try:
        bucket.get_bytes("x")
    except RemoteCacheError as exc:
        print(f"{time.monotonic() - start:.1f} {exc}")
        sys.exit(0)
    sys.exit(1)
"""


def _silent_endpoint(tmp_path: Path, env: dict[str, str]) -> float:
    result = child(SILENT, tmp_path, {**THROWAWAY_AWS_ENV, **env}, timeout=120)
    assert result.code == 0, result.err[-3000:]
    return float(result.out.split()[0])


def test_a_silent_remote_cache_is_given_up_on_after_the_timeouts(tmp_path: Path) -> None:
    assert _silent_endpoint(tmp_path, {"EIFBUILD_NETWORK_TIMEOUT": "1"}) < 6


@pytest.mark.slow
def test_a_silent_remote_cache_costs_about_15_seconds_by_default(tmp_path: Path) -> None:
    assert _silent_endpoint(tmp_path, {}) < 20
