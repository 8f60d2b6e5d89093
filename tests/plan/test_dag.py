"""End-to-end tests of `doit eif` / `doit check` on projects in temp dirs (real doit subprocesses,
stand-in sources from a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import require_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dag_helpers import ALL_X86, DODO, EIF_TOML, Project, seeded
from oci_helpers import sample_image, write_layout
from oci_registry import Registry
from source_helpers import LocalServer

from eifbuild.eif import describe, read_eif
from eifbuild.eif.reader import read_section
from eifbuild.inspect import diff_files, diff_text
from eifbuild.ramdisk import read_cpio
from eifbuild.store import Store


@pytest.fixture
def project(tmp_path: Path, server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("EIFBUILD_CACHE", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    proj = Project(tmp_path / "app", server)
    proj.root.mkdir()
    proj.write("dodo.py", DODO)
    proj.write("eif.toml", EIF_TOML)
    proj.recipe({"x86_64": seeded("kernel", 40_000), "aarch64": seeded("kernel-arm", 50_000)})
    (proj.root / "init.bin").write_bytes(seeded("init", 9000))
    proj.write("rootfs/bin/app", "#!/bin/sh\necho app\n").chmod(0o755)
    proj.write("rootfs/etc/config", "mode=prod\n")
    return proj


def test_first_build_then_noop(project: Project) -> None:
    first = project.doit()
    assert first.ran == ALL_X86
    out = first.result.stdout
    assert "build/hello-x86_64.eif (" in out
    assert "run it with at least 4 MiB of enclave memory" in out
    assert f"PCR0: {project.pcrs()['PCR0']}" in out
    image = read_eif(project.eif())
    assert image.cmdline == "console=ttyS0 panic=30"  # the cmdline source, trimmed like nitro-cli
    info = describe(image)
    assert info["ImageName"] == "hello"
    assert info["ImageVersion"] == "0.1.0"
    assert info["Metadata"]["BuildTime"] == "2024-01-01T00:00:00+00:00"
    assert info["Metadata"]["BuildTool"] == "eifbuild"
    assert info["Measurements"]["PCR0"] == project.pcrs()["PCR0"]
    ours = info["Metadata"]["eifbuild"]
    assert ours["inputs"]["kernel"] == hashlib.sha256(seeded("kernel", 40_000)).hexdigest()
    assert ours["inputs"]["init"] == hashlib.sha256(seeded("init", 9000)).hexdigest()
    assert set(ours["inputs"]) == {"kernel", "init", "rootfs", "ramdisk/bootstrap", "ramdisk/app"}
    recipe = project.root / "recipes" / "test.toml"
    assert ours["recipes"] == {"test": hashlib.sha256(recipe.read_bytes()).hexdigest()}
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "eifbuild",
            "verify",
            str(project.eif()),
            "--pcrs",
            str(project.eif().with_suffix(".pcr.json")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    again = project.doit()
    assert again.ran == set()
    assert again.skipped == ALL_X86


def test_app_file_change_reruns_only_app_ramdisk_and_eif(project: Project) -> None:
    project.doit()
    before = project.pcrs()
    (project.root / "rootfs/etc/config").write_text("mode=debug\n")
    run = project.doit()
    assert run.ran == {"ramdisk:app:x86_64", "eif:x86_64"}
    after = project.pcrs()
    assert after["PCR1"] == before["PCR1"]
    assert after["PCR0"] != before["PCR0"]
    assert after["PCR2"] != before["PCR2"]


def test_touching_files_reruns_nothing(project: Project) -> None:
    project.doit()
    for path in (project.root / "rootfs").rglob("*"):
        path.touch()
    (project.root / "init.bin").touch()
    (project.root / "eif.toml").touch()
    assert project.doit().ran == set()


def test_same_size_edit_with_restored_mtime_is_rebuilt(project: Project) -> None:
    project.doit()
    config = project.root / "rootfs/etc/config"
    st = config.stat()
    config.write_text("mode=test\n")  # same size as "mode=prod\n"
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert project.doit().ran == {"ramdisk:app:x86_64", "eif:x86_64"}


def test_kernel_pin_change_reruns_fetch_and_eif(project: Project) -> None:
    project.doit()
    before = project.pcrs()
    project.recipe({"x86_64": seeded("kernel-v2", 40_000)})
    run = project.doit()
    assert run.ran == {"fetch:test.kernel.x86_64", "eif:x86_64"}
    after = project.pcrs()
    assert after["PCR0"] != before["PCR0"]
    assert after["PCR1"] != before["PCR1"]
    assert after["PCR2"] == before["PCR2"]


def test_cmd_change_reruns_app_ramdisk(project: Project) -> None:
    project.doit()
    text = (project.root / "eif.toml").read_text().replace('"--serve"', '"--debug"')
    (project.root / "eif.toml").write_text(text)
    assert project.doit().ran == {"ramdisk:app:x86_64", "eif:x86_64"}


def test_output_replaced_by_hand_is_republished(project: Project) -> None:
    project.doit()
    good = project.eif().read_bytes()
    project.eif().unlink()
    project.eif().write_bytes(b"junk")
    assert project.doit().ran == {"eif:x86_64"}
    assert project.eif().read_bytes() == good


def test_store_entry_edited_through_the_published_link_is_rebuilt(project: Project) -> None:
    project.doit()
    good = project.eif().read_bytes()
    os.chmod(project.eif(), 0o644)
    with open(project.eif(), "r+b") as fh:  # an in-place edit also reaches the hard-linked store entry
        fh.seek(600)
        fh.write(b"X")
    run = project.doit()
    assert run.ran == {"eif:x86_64"}
    assert "was modified; building it again" in run.result.stderr
    assert project.eif().read_bytes() == good


BAD_CONFIGS = [
    ("[eif]", '[eif]\nnmae = "x"', "key 'eif.nmae': unknown key; did you mean 'name'?"),
    ('rootfs = "rootfs"', 'rootfs = "rootfs"\ncmd2 = []', "key 'app.cmd2': unknown key; did you mean 'cmd'?"),
    ('init = { path = "init.bin" }', 'init = "nope.init"', "no recipe named 'nope' (recipes: test)"),
    ('init = { path = "init.bin" }', 'init = "test.init"', "recipe 'test' has no source 'init'"),
]


@pytest.mark.parametrize(("old", "new", "message"), BAD_CONFIGS, ids=["typo", "app-typo", "recipe", "source"])
def test_bad_config_is_one_clear_line(project: Project, old: str, new: str, message: str) -> None:
    path = project.root / "eif.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    run = project.doit(check=False)
    assert run.result.returncode != 0
    errors = [line for line in run.result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1
    assert errors[0].startswith(f"ERROR: {path}, key ")
    assert message in errors[0]
    assert "Traceback" not in run.result.stderr
    assert not (project.root / "build").exists()


def test_unpinned_source_names_eifbuild_lock(project: Project) -> None:
    recipe = project.root / "recipes/test.toml"
    lines = [
        line for line in recipe.read_text().splitlines() if not line.startswith("sha256") or "cmdline" in line
    ]
    recipe.write_text("\n".join(lines) + "\n")
    run = project.doit(check=False)
    assert run.result.returncode != 0
    assert "has no pin" in run.result.stderr
    assert "eifbuild lock --trust-on-first-use" in run.result.stderr
    assert "Traceback" not in run.result.stderr


def test_hash_mismatch_fails_cleanly_and_leaves_nothing(project: Project) -> None:
    recipe = project.root / "recipes/test.toml"
    kernel_hash = hashlib.sha256(seeded("kernel", 40_000)).hexdigest()
    recipe.write_text(recipe.read_text().replace(kernel_hash, "0" * 64))
    run = project.doit(check=False)
    assert run.result.returncode != 0
    assert (
        "hash mismatch: expected 0000000000000000000000000000000000000000000000000000000000000000"
        in run.result.stdout + run.result.stderr
    )
    assert "Traceback" not in run.result.stdout + run.result.stderr
    store = Store(project.root / "cache")
    kinds = {e.kind for e in store.entries()}
    assert "eif" not in kinds
    assert not project.eif().exists()
    assert not list((store.root / "tmp").iterdir())


def test_two_concurrent_builds(project: Project) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "doit"],
            cwd=project.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out + err
    data = project.eif().read_bytes()
    assert project.doit().ran == set()
    assert project.eif().read_bytes() == data
    store = Store(project.root / "cache")
    assert store.verify() == []


def test_check_passes(project: Project) -> None:
    run = project.doit("check")
    assert "x86_64: identical (sha256 " in run.result.stdout
    assert "reproducible: every EIF and PCR matches" in run.result.stdout


def test_check_catches_a_nondeterministic_step(project: Project) -> None:
    hook = {"EIFBUILD_TEST_INJECT_TIME": "etc/build-time"}
    project.doit(env=hook)
    run = project.doit("check", env=hook, check=False)
    assert run.result.returncode != 0
    out = run.result.stdout
    assert "x86_64: sha256 differs: " in out
    assert "x86_64: PCR0 differs: " in out
    assert "x86_64: PCR2 differs: " in out
    assert "PCR1 differs" not in out
    assert "NOT reproducible" in out


def test_clean_removes_outputs(project: Project) -> None:
    project.doit()
    assert project.eif().exists()
    assert (project.root / "build/hello-x86_64.intoto.json").exists()
    project.doit("clean")
    assert not project.eif().exists()
    assert not (project.root / "build/hello-x86_64.intoto.json").exists()
    assert project.doit().ran == {"eif:x86_64"}  # the store still has everything else


def test_list_shows_the_tasks(project: Project) -> None:
    out = project.doit("list", "--all").result.stdout
    for name in ("eif:x86_64", "ramdisk:app:x86_64", "fetch:test.kernel.x86_64", "check"):
        assert name in out


def test_recipe_defaults_fill_the_bootstrap(project: Project) -> None:
    url, digest = project.serve("init", seeded("init-blob", 7000))
    nsm_url, nsm_digest = project.serve("nsm.ko", seeded("nsm", 3000))
    extra = f'[sources.init]\nurl = "{url}"\nsha256 = "{digest}"\n'
    extra += f'[sources.nsm]\nurl = "{nsm_url}"\nsha256 = "{nsm_digest}"\n'
    project.recipe({"x86_64": seeded("kernel", 40_000)}, extra=extra)
    recipe = project.root / "recipes/test.toml"
    defaults = 'cmdline = "cmdline"\ninit = "init"\nnsm = "nsm"\n'
    recipe.write_text(recipe.read_text().replace('cmdline = "cmdline"\n', defaults, 1))
    toml = project.root / "eif.toml"
    toml.write_text(toml.read_text().replace('[bootstrap]\ninit = { path = "init.bin" }\n', ""))
    run = project.doit()
    assert {"fetch:test.init", "fetch:test.nsm"} <= run.ran
    inputs = describe(read_eif(project.eif()))["Metadata"]["eifbuild"]["inputs"]
    assert inputs["init"] == digest
    assert inputs["nsm"] == nsm_digest
    assert "nsm.ko" in _bootstrap_members(project)
    # nsm = "none" overrides the recipe's default
    toml.write_text(toml.read_text() + '\n[bootstrap]\nnsm = "none"\n')
    assert project.doit().ran == {"ramdisk:bootstrap:x86_64", "eif:x86_64"}
    assert "nsm.ko" not in _bootstrap_members(project)


def _bootstrap_members(project: Project) -> list[str]:
    image = read_eif(project.eif())
    data = read_section(image, image.ramdisks[0])
    return [m.name for m in read_cpio(io.BytesIO(data))]


def test_signed_build_is_deterministic(project: Project, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eifbuild-test")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA384())
    )
    (project.root / "keys").mkdir()
    (project.root / "keys/cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (project.root / "keys/key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    toml = project.root / "eif.toml"
    toml.write_text(toml.read_text() + '\n[sign]\ncertificate = "keys/cert.pem"\nkey = "keys/key.pem"\n')
    project.doit()
    assert "PCR8" in project.pcrs()
    first = project.eif().read_bytes()
    run = project.doit("check")  # a fresh store signs again: same bytes, and the check compares them
    assert "x86_64: identical (sha256 " in run.result.stdout
    assert "PCR8 " in run.result.stdout
    assert "reproducible: every EIF and PCR matches" in run.result.stdout
    assert "not compared" not in run.result.stdout
    assert project.eif().read_bytes() == first
    assert describe(read_eif(project.eif()))["SignatureCheck"] is True


def test_oci_layout_as_the_app(project: Project) -> None:
    write_layout(project.root / "image", [sample_image("amd64")], tag="v1")
    toml = project.root / "eif.toml"
    text = toml.read_text().replace(
        'rootfs = "rootfs"\ncmd = ["/bin/app", "--serve"]\n', 'oci = "image:v1"\n'
    )
    toml.write_text(text)
    first = project.doit()
    assert "ramdisk:app:x86_64" in first.ran
    assert "fetch:oci:x86_64" in first.ran | first.skipped  # a local layout is read in place
    assert project.doit().ran == set()
    info = describe(read_eif(project.eif()))
    assert "rootfs" in info["Metadata"]["eifbuild"]["inputs"]
    # which image it was, for `describe` and `diff` (issue #27): unmeasured metadata
    built = write_layout(project.root / "image2", [sample_image("amd64", compression="zstd")], tag="v2")
    assert info["Metadata"]["eifbuild"]["image"] == {
        "ref": "image:v1",
        "manifest": info["Metadata"]["eifbuild"]["image"]["manifest"],
        "platform": "linux/amd64",
    }
    first_eif = project.root / "v1.eif"
    first_eif.write_bytes(project.eif().read_bytes())
    toml.write_text(toml.read_text().replace('oci = "image:v1"', 'oci = "image2:v2"'))
    assert project.doit().ran == {"eif:x86_64"}  # the same files (zstd layers): only the metadata moves
    report = diff_text(diff_files(first_eif, project.eif(), "sha384"), first_eif, project.eif())
    assert f"app image 'manifest' changed: {info['Metadata']['eifbuild']['image']['manifest']!r} → " in report
    assert f"{built.manifests['amd64']!r}" in report
    assert "app image 'ref' changed: 'image:v1' → 'image2:v2'" in report


@pytest.mark.slow
def test_registry_image_pinned_by_digest(project: Project, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    built = write_layout(layout, [sample_image("amd64")], tag="v1")
    registry = Registry(require_tool("docker-registry"), tmp_path)
    registry.start()
    try:
        registry.push(require_tool("skopeo"), layout, "v1", "test/app")
        toml = project.root / "eif.toml"
        oci = f'oci = "{registry.host}/test/app@{built.digest}"\n'
        toml.write_text(toml.read_text().replace('rootfs = "rootfs"\ncmd = ["/bin/app", "--serve"]\n', oci))
        assert "fetch:oci:x86_64" in project.doit().ran
    finally:
        registry.stop()
    # everything is in the store now: a no-op needs no registry
    assert project.doit().ran == set()
    # the same image from its layout is the same app ramdisk, so the same PCRs; only the EIF's
    # unmeasured metadata names the other reference (CustomMetadata.eifbuild.image.ref)
    before = describe(read_eif(project.eif()))
    toml.write_text(toml.read_text().replace(oci, f'oci = "{layout}:v1"\n'))
    assert project.doit().ran == {"eif:x86_64"}
    after = describe(read_eif(project.eif()))
    assert after["Measurements"] == before["Measurements"]
    assert after["Metadata"]["eifbuild"]["image"]["ref"] == f"{layout}:v1"


@pytest.mark.slow
def test_compiled_init_and_app_for_both_arches(project: Project) -> None:
    project.write("hello.c", '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    toml = project.root / "eif.toml"
    text = toml.read_text().replace('arch = ["x86_64"]', 'arch = ["x86_64", "aarch64"]')
    text = text.replace('init = { path = "init.bin" }', 'init = { compile = "eifbuild-init" }')
    text = text.replace(
        'cmd = ["/bin/app", "--serve"]',
        'cmd = ["/bin/hello"]\nfiles = { "/bin/hello" = { compile = ["hello.c"] } }',
    )
    toml.write_text(text)
    run = project.doit()
    assert {
        "compile:init:x86_64",
        "compile:init:aarch64",
        "compile:/bin/hello:x86_64",
        "compile:/bin/hello:aarch64",
    } <= run.ran
    assert project.doit().ran == set()
    assert read_eif(project.eif("aarch64")).arch == "aarch64"
    check = project.doit("check")
    assert "aarch64: identical" in check.result.stdout


def test_gc_keeps_what_the_last_build_used(project: Project) -> None:
    project.doit()
    (project.root / "rootfs/etc/config").write_text("mode=debug\n")
    project.doit()
    store = Store(project.root / "cache")
    kinds_before = sorted(e.kind for e in store.entries())
    assert kinds_before.count("eif") == 2
    gc = subprocess.run(
        [sys.executable, "-m", "eifbuild", "store", "gc", "--keep-days", "0"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert gc.returncode == 0, gc.stderr
    kinds_after = sorted(e.kind for e in store.entries())
    assert kinds_after.count("eif") == 1
    assert kinds_after.count("ramdisk") == 2  # the old app ramdisk went, both current ones stay
    assert project.doit().ran == set()


def test_store_ls_labels_every_entry(project: Project) -> None:
    write_layout(project.root / "image", [sample_image("amd64")], tag="v1")
    toml = project.root / "eif.toml"
    text = toml.read_text().replace('init = { path = "init.bin" }', 'init = { compile = "eifbuild-init" }')
    toml.write_text(text.replace('rootfs = "rootfs"\ncmd = ["/bin/app", "--serve"]\n', 'oci = "image:v1"\n'))
    project.doit()
    ls = subprocess.run(
        [sys.executable, "-m", "eifbuild", "store", "ls"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
    )
    labels = {line.split(maxsplit=4)[1]: line.split(maxsplit=4)[4] for line in ls.stdout.splitlines()}
    assert {"source", "zig-cc", "oci-blob", "oci-layer", "ramdisk", "eif"} <= set(labels), ls.stdout
    assert all(len(line.split(maxsplit=4)) == 5 for line in ls.stdout.splitlines()), ls.stdout
    assert labels["eif"] == "EIF hello 0.1.0 x86_64"
    assert labels["zig-cc"] == "init for x86_64-linux-musl, from init.c"


def _read_only(path: Path) -> list[str]:
    """A command prefix under which ``path`` cannot be written: chmod -R a-w stops a normal user;
    root ignores modes, so it gets a read-only bind mount in a private mount namespace."""
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    if os.geteuid() != 0:
        return []
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind -o ro "$0" "$0" && ! touch "$0/.probe" 2>/dev/null',
            str(path),
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip("root, and no read-only bind mount here (unshare -m)")
    return [
        "unshare",
        "-m",
        "sh",
        "-c",
        'mount --bind -o ro "$0" "$0" && shift && exec "$@"',
        str(path),
        "--",
    ]


def test_a_read_only_store_serves_a_built_project(project: Project) -> None:
    project.doit()
    good = project.eif().read_bytes()
    store = project.root / "cache"
    prefix = _read_only(store)
    try:
        run = subprocess.run(
            [*prefix, sys.executable, "-m", "doit", "eif"],
            cwd=project.root, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Traceback" not in run.stderr
        assert project.eif().read_bytes() == good
        # fingerprints the store cannot hold (a fresh checkout, a touched file, no published EIF)
        os.utime(project.root / "rootfs/etc/config", (1, 1))
        project.eif().unlink()
        run = subprocess.run(
            [*prefix, sys.executable, "-m", "doit", "eif"],
            cwd=project.root, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert project.eif().read_bytes() == good
        # something to build: one line naming the directory that cannot be written
        (project.root / "rootfs/etc/config").write_text("mode=debug\n")
        run = subprocess.run(
            [*prefix, sys.executable, "-m", "doit", "eif"],
            cwd=project.root, capture_output=True, text=True, check=False, timeout=600,
        )  # fmt: skip
        assert run.returncode != 0, run.stdout + run.stderr
        assert "Traceback" not in run.stdout + run.stderr
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error:")]
        assert len(errors) == 1, run.stdout + run.stderr
        assert f"the store {store} cannot be written" in errors[0], errors
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(store)], check=True)
