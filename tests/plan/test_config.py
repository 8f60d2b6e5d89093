from __future__ import annotations

import json
from pathlib import Path

import pytest

from eifbuild.eif import BuildTime
from eifbuild.errors import ConfigError, FileAccessError
from eifbuild.plan.config import (
    App,
    Builtin,
    Compile,
    PathInput,
    SourceRef,
    TextInput,
    load_project,
    parse_project,
)

MINIMAL = """
[eif]
name = "hello"
recipes = ["recipes/demo.toml"]

[bootstrap]
kernel = "demo.kernel"
init = { compile = "eifbuild-init" }

[app]
rootfs = "rootfs"
cmd = ["/bin/hello"]
"""

FULL = """
[eif]
name = "hello"
version = "0.1.0"
arch = ["aarch64", "x86_64"]
output = "out"
recipes = ["recipes/demo.toml", "recipes/aws-nitro-cli-1.5.0.toml"]
cmdline = { x86_64 = "console=ttyS0", aarch64 = "console=ttyS0 root=/dev/ram0" }
build_time = "2024-05-01T12:00:00+00:00"
metadata = { team = "enclaves", tags = ["a", "b"] }
compression = "gzip"

[bootstrap]
kernel = { path = "kernels/bzImage" }
kernel_config = "aws-nitro-cli-1.5.0.kernel-config"
init = { compile = [{ source = "aws-init-source.init-c" }], cflags = ["-DX=1"] }
nsm = "aws-nitro-cli-1.5.0.nsm-ko"

[app]
rootfs = "examples/hello/rootfs"
cmd = ["/bin/hello", "--loud"]
env = { Z = "last", GREETING = "hi there" }
modes = "preserve"

[app.files]
"/bin/hello" = { compile = ["examples/hello/hello.c"] }
"/etc/motd" = { text = "welcome\\n", mode = "0600" }
"/etc/ca.pem" = { path = "certs/ca.pem" }
"/etc/blob" = "aws-nitro-cli-1.5.0.init"

[sign]
certificate = "keys/cert.pem"
key = "keys/key.pem"
"""


def _parse(text: str, tmp_path: Path) -> object:
    return parse_project(text, tmp_path / "eif.toml")


def test_minimal_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    project = parse_project(MINIMAL, tmp_path / "eif.toml")
    assert project.name == "hello"
    assert project.version == "0.0.0"
    assert project.arches == ("x86_64", "aarch64")
    assert project.output == tmp_path / "build"
    assert project.recipes == (tmp_path / "recipes" / "demo.toml",)
    assert project.bootstrap.kernel == SourceRef("demo", "kernel")
    assert project.bootstrap.init == Compile((Builtin("eifbuild-init"),))
    assert project.bootstrap.nsm is None  # the recipes' defaults decide
    assert project.bootstrap.kernel_config is None
    assert project.app == App(rootfs=tmp_path / "rootfs", cmd=("/bin/hello",))
    assert project.build_time == BuildTime("1970-01-01T00:00:00+00:00", 0)
    assert project.cmdline is None
    assert project.compression == "none"
    assert project.sign is None
    assert project.lock_file == tmp_path / "eif.lock"
    assert project.root == tmp_path


def test_source_date_epoch_sets_build_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    project = parse_project(MINIMAL, tmp_path / "eif.toml")
    assert project.build_time == BuildTime("2023-11-14T22:13:20+00:00", 1700000000)


def test_full_document(tmp_path: Path) -> None:
    project = parse_project(FULL, tmp_path / "eif.toml")
    assert project.arches == ("x86_64", "aarch64")  # canonical order, whatever the file says
    assert project.output == tmp_path / "out"
    assert project.cmdline == {"x86_64": "console=ttyS0", "aarch64": "console=ttyS0 root=/dev/ram0"}
    assert project.build_time == BuildTime("2024-05-01T12:00:00+00:00", 1714564800)
    assert project.metadata == {"team": "enclaves", "tags": ["a", "b"]}
    assert project.compression == "gzip"
    boot = project.bootstrap
    assert boot.kernel == PathInput(tmp_path / "kernels" / "bzImage")
    assert boot.kernel_config == SourceRef("aws-nitro-cli-1.5.0", "kernel-config")
    assert boot.init == Compile((SourceRef("aws-init-source", "init-c"),), ("-DX=1",))
    assert boot.nsm == SourceRef("aws-nitro-cli-1.5.0", "nsm-ko")
    app = project.app
    assert app.cmd == ("/bin/hello", "--loud")
    assert app.env == (("GREETING", "hi there"), ("Z", "last"))
    assert app.modes == "preserve"
    files = {f.dest: f for f in app.files}
    assert [f.dest for f in app.files] == ["/bin/hello", "/etc/blob", "/etc/ca.pem", "/etc/motd"]
    assert files["/bin/hello"].input == Compile((PathInput(tmp_path / "examples/hello/hello.c"),))
    assert files["/etc/motd"].input == TextInput("welcome\n")
    assert files["/etc/motd"].mode == 0o600
    assert files["/etc/ca.pem"].input == PathInput(tmp_path / "certs/ca.pem")
    assert files["/etc/blob"].input == SourceRef("aws-nitro-cli-1.5.0", "init")
    assert project.sign is not None
    assert project.sign.key == str(tmp_path / "keys/key.pem")


def test_cmdline_string_applies_to_every_arch_and_source_form(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "hello"', 'name = "hello"\ncmdline = "console=ttyS0"')
    assert parse_project(text, tmp_path / "eif.toml").cmdline == {
        "x86_64": "console=ttyS0",
        "aarch64": "console=ttyS0",
    }
    text = MINIMAL.replace('name = "hello"', 'name = "hello"\ncmdline = { source = "aws.cmdline" }')
    assert parse_project(text, tmp_path / "eif.toml").cmdline == SourceRef("aws", "cmdline")


def test_metadata_from_json_file(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"b": 1, "a": {"z": None}}))
    text = MINIMAL.replace('name = "hello"', 'name = "hello"\nmetadata = "meta.json"')
    assert parse_project(text, tmp_path / "eif.toml").metadata == {"b": 1, "a": {"z": None}}


def test_load_project_accepts_directory(tmp_path: Path) -> None:
    (tmp_path / "eif.toml").write_text(MINIMAL)
    assert load_project(tmp_path).name == "hello"


BAD_CASES = [
    ("typo in eif", ("[eif]", '[eif]\nnmae = "x"'), "key 'eif.nmae': unknown key; did you mean 'name'?"),
    ("typo in section", ("[app]", "[ap]\n[app]"), "key 'ap': unknown key; did you mean 'app'?"),
    (
        "wrong arch",
        ('name = "hello"', 'name = "hello"\narch = ["riscv64"]'),
        "unknown architecture 'riscv64'",
    ),
    (
        "arch twice",
        ('name = "hello"', 'name = "hello"\narch = ["x86_64", "amd64"]'),
        "x86_64 is listed twice",
    ),
    ("bad ref", ('kernel = "demo.kernel"', 'kernel = "kernel"'), "expected a recipe source reference"),
    (
        "two kinds",
        ('kernel = "demo.kernel"', 'kernel = { path = "a", source = "b.c" }'),
        "key 'bootstrap.kernel': expected exactly one of: path, source",
    ),
    (
        "compile kernel",
        ('kernel = "demo.kernel"', 'kernel = { compile = ["k.c"] }'),
        "key 'bootstrap.kernel.compile': unknown key; expected one of: path, source",
    ),
    (
        "nsm typo",
        ('init = { compile = "eifbuild-init" }', 'nsm = "nope"'),
        "expected a recipe source reference",
    ),
    ("no cmd", ('cmd = ["/bin/hello"]', ""), "key 'app.cmd': missing: the command to run"),
    ("empty cmd", ('cmd = ["/bin/hello"]', "cmd = []"), "key 'app.cmd': expected at least the program"),
    (
        "cmd not list",
        ('cmd = ["/bin/hello"]', 'cmd = "/bin/hello"'),
        "key 'app.cmd': expected an array of strings",
    ),
    ("bad env", ('cmd = ["/bin/hello"]', 'cmd = ["/bin/hello"]\nenv = { "A-B" = "x" }'), "key 'app.env.A-B'"),
    (
        "bad time",
        ('name = "hello"', 'name = "hello"\nbuild_time = "yesterday"'),
        "key 'eif.build_time': expected an RFC 3339 time like '2024-01-01T00:00:00+00:00', got 'yesterday'",
    ),
    (
        "naive time",
        ('name = "hello"', 'name = "hello"\nbuild_time = "2024-01-01T00:00:00"'),
        "has no UTC offset",
    ),
    (
        "bad compression",
        ('name = "hello"', 'name = "hello"\ncompression = "xz"'),
        "expected 'none' or 'gzip'",
    ),
    (
        "relative dest",
        ('cmd = ["/bin/hello"]', 'cmd = ["/bin/hello"]\nfiles = { "bin/x" = { text = "" } }'),
        "expected an absolute path inside the enclave",
    ),
    (
        "dotdot dest",
        ('cmd = ["/bin/hello"]', 'cmd = ["/bin/hello"]\nfiles = { "/bin/../x" = { text = "" } }'),
        "expected an absolute path inside the enclave",
    ),
    (
        "bad mode",
        ('cmd = ["/bin/hello"]', 'cmd = ["/bin/hello"]\nfiles = { "/x" = { text = "", mode = "rwx" } }'),
        "expected an octal mode string like '0755', got 'rwx'",
    ),
    ("both rootfs and oci", ('rootfs = "rootfs"', 'rootfs = "rootfs"\noci = "img@sha256:00"'), "not both"),
    (
        "bad image digest",
        ('rootfs = "rootfs"', 'oci = "127.0.0.1:5000/app@sha256:00"'),
        "key 'app.oci': image reference '127.0.0.1:5000/app@sha256:00': bad digest 'sha256:00'",
    ),
    (
        "bad image repository",
        ('rootfs = "rootfs"', 'oci = "127.0.0.1:5000/App:v1"'),
        "key 'app.oci': image reference '127.0.0.1:5000/App:v1': bad repository name 'App'",
    ),
    (
        "missing image layout",
        ('rootfs = "rootfs"', 'oci = "./images/app:v1"'),
        "key 'app.oci': image './images/app:v1': no such file or directory",
    ),
    ("nul cmdline", ('name = "hello"', 'name = "hello"\ncmdline = "a\\u0000b"'), "cannot contain a NUL byte"),
]


@pytest.mark.parametrize(("replace", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_configs_name_file_key_and_expectation(
    tmp_path: Path, replace: tuple[str, str], message: str
) -> None:
    old, new = replace
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        parse_project(text, tmp_path / "eif.toml")
    assert str(info.value).startswith(str(tmp_path / "eif.toml") + ", ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_exact_messages(tmp_path: Path) -> None:
    path = tmp_path / "eif.toml"
    with pytest.raises(ConfigError) as info:
        parse_project("[eif]\nname = 'x'\n[bootstrap]\n", path)
    assert str(info.value) == f"{path}, key 'app': missing section [app]"
    with pytest.raises(ConfigError) as info:
        parse_project("[eif\n", path)
    assert str(info.value).startswith(f"{path}: invalid TOML: ")
    with pytest.raises(FileAccessError) as info:
        load_project(tmp_path / "nope.toml")
    assert (
        str(info.value) == f"{tmp_path / 'nope.toml'}: no such file: expected an eif.toml build description"
    )


def test_bootstrap_may_be_left_to_recipe_defaults(tmp_path: Path) -> None:
    text = MINIMAL.replace('[bootstrap]\nkernel = "demo.kernel"\ninit = { compile = "eifbuild-init" }\n', "")
    boot = parse_project(text, tmp_path / "eif.toml").bootstrap
    assert (boot.kernel, boot.init, boot.kernel_config, boot.nsm) == (None, None, None, None)
    text = MINIMAL.replace(
        'init = { compile = "eifbuild-init" }', 'init = { compile = "eifbuild-init" }\nnsm = "none"'
    )
    assert parse_project(text, tmp_path / "eif.toml").bootstrap.nsm == "none"


def test_provenance_names_its_own_key(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '\n[provenance]\ncertificate = "keys/prov.crt"\nkey = "arn:aws:kms:eu-central-1:111122223333:key/k"\n'
    )
    project = parse_project(text, tmp_path / "eif.toml")
    assert project.provenance is not None
    assert project.provenance.certificate == tmp_path / "keys/prov.crt"
    assert project.provenance.key == "arn:aws:kms:eu-central-1:111122223333:key/k"
    assert parse_project(MINIMAL, tmp_path / "eif.toml").provenance is None
    with pytest.raises(ConfigError, match=r"key 'provenance\.key': missing"):
        parse_project(MINIMAL + '\n[provenance]\ncertificate = "c.pem"\n', tmp_path / "eif.toml")
