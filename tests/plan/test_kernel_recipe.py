"""Kernel recipes: the committed demo kit (recipes/demo.toml and examples/kernel/) and AWS's recipe.

The committed kernels and configs must be what the recipe pins, and every fragment option must be
in the committed config as asked. AWS's 6.6.79 recipe cannot be built offline; it is only parsed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from eifbuild.arch import ARCHES, Arch, info
from eifbuild.cli import main
from eifbuild.errors import ConfigError
from eifbuild.plan.kernelrecipe import parse_kernel_build, resolve
from eifbuild.sources import load_recipe
from eifbuild.sources.recipe import parse_recipe
from eifbuild.store import Store
from eifbuild.toolchain.kernel import fragment_mismatches, parse_config
from eifbuild.util.fsutil import hash_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "recipes" / "demo.toml"
AWS = REPO / "recipes" / "aws-kernel-6.6.79.toml"
NSM_MODULE = REPO / "recipes" / "demo-nsm-module.toml"
KERNELS = REPO / "examples" / "kernel"
# the two profiles of the demo kit: their recipe and the folder holding <arch>/
PROFILES = {"tiny": (DEMO, KERNELS), "app": (REPO / "recipes" / "demo-app.toml", KERNELS / "app")}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("arch", ARCHES)
def test_demo_recipe_pins_the_committed_files(arch: Arch, profile: str) -> None:
    path, kernels = PROFILES[profile]
    recipe = load_recipe(path)
    defaults = recipe.defaults_for(arch)
    for role in ("kernel", "kernel_config", "cmdline"):
        source = recipe.source(defaults[role], arch)
        path = source.local_path
        assert path is not None
        assert path.is_file(), path
        assert hash_file(path) == source.pins.sha256, (
            f"{role} ({arch}): {path} differs from {recipe.path.name}"
        )
    kernel = recipe.source(defaults["kernel"], arch).local_path
    assert kernel is not None
    assert kernel.resolve() == kernels / arch / info(arch).kernel_image
    fragment = recipe.source(parse_kernel_build(recipe, arch).fragment or "", arch).local_path
    assert fragment is not None
    assert fragment.resolve() == kernels / arch / "fragment.config"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("arch", ARCHES)
def test_every_fragment_option_is_in_the_committed_config(arch: Arch, profile: str) -> None:
    kernels = PROFILES[profile][1]
    fragment = parse_config((kernels / arch / "fragment.config").read_text(), strict=True)
    config = parse_config((kernels / arch / f"{info(arch).kernel_image}.config").read_text())
    assert len(fragment) > 20
    assert fragment_mismatches(config, fragment) == []
    # what eifbuild's init and a static musl app need, whatever the fragment's comments say
    for option in (
        "DEVTMPFS",
        "PROC_FS",
        "SYSFS",
        "TMPFS",
        "UNIX98_PTYS",
        "CGROUPS",
        "FUTEX",
        "POSIX_TIMERS",
    ):
        assert config[f"CONFIG_{option}"] == "y"
    for option in (
        "VSOCKETS",
        "VIRTIO_VSOCKETS",
        "VIRTIO_MMIO",
        "VIRTIO_MMIO_CMDLINE_DEVICES",
        "BLK_DEV_INITRD",
    ):
        assert config[f"CONFIG_{option}"] == "y"


@pytest.mark.parametrize("arch", ARCHES)
def test_the_app_profile_is_the_tiny_one_and_more(arch: Arch) -> None:
    tiny = parse_config((KERNELS / arch / "fragment.config").read_text(), strict=True)
    app = parse_config((KERNELS / "app" / arch / "fragment.config").read_text(), strict=True)
    assert {name: app.get(name) for name in tiny} == tiny
    assert (KERNELS / "app" / arch / "cmdline").read_bytes() == (KERNELS / arch / "cmdline").read_bytes()


@pytest.mark.parametrize("profile", PROFILES)
def test_committed_kernel_headers(profile: str) -> None:
    kernels = PROFILES[profile][1]
    bz = (kernels / "x86_64" / "bzImage").read_bytes()
    assert bz[0x202:0x206] == b"HdrS"  # x86 boot protocol header
    image = (kernels / "aarch64" / "Image").read_bytes()
    assert image[56:60] == b"ARM\x64"
    assert int.from_bytes(image[8:16], "little") == 0x200000  # text_offset, for the Nitro loader
    assert struct.unpack_from("<Q", image, 8)[0] == 0x200000  # text_offset set as AWS's build does


@pytest.mark.parametrize("arch", ARCHES)
def test_demo_kernel_build_uses_debian_linux_source(arch: Arch) -> None:
    kr = parse_kernel_build(load_recipe(DEMO), arch)
    assert kr.source_recipe.name == "linux-source-6.12"
    source = kr.source_recipe.source(kr.source, arch)
    assert (source.apt, source.version, source.member) == (
        "linux-source-6.12",
        "6.12.118-1~deb12u1",
        "usr/src/linux-source-6.12.tar.xz",
    )
    assert source.pins.sha256 == "896aff3b39299fa0dd36fef4f5db56ab189182e39abbbb1227dafdc7fcfe3fc3"
    assert kr.tarball_sha256 == "c93391b6a4884e6428ffbfbb8ce6340229ad28dc421e9f19bc081740b1ab34b2"
    # Debian's snapshot archive as the mirror, for when the version has left the archive
    assert source.mirrors == (
        "https://snapshot.debian.org/archive/debian-security/20261204T120000Z/pool/updates/main/l/"
        "linux-6.12/linux-source-6.12_6.12.118-1~deb12u1_all.deb",
    )
    assert (kr.base, kr.fragment, kr.patches, kr.modules) == ("tinyconfig", "fragment", (), ())
    assert kr.expected_sha256 == hash_file(KERNELS / arch / info(arch).kernel_image)


@pytest.mark.parametrize("arch", ARCHES)
def test_the_nsm_module_recipe_is_the_demo_build_with_nsm_m(arch: Arch) -> None:
    demo = parse_kernel_build(load_recipe(DEMO), arch)
    kr = parse_kernel_build(load_recipe(NSM_MODULE), arch)
    assert kr.source_recipe.path == demo.source_recipe.path
    assert (kr.source, kr.base, kr.fragment) == (demo.source, demo.base, demo.fragment)
    fragment = kr.recipe.source("fragment", arch)
    assert fragment.local_path == demo.recipe.source("fragment", arch).local_path
    assert fragment.pins == demo.recipe.source("fragment", arch).pins
    assert dict(kr.options) == {"CONFIG_MODULES": "y", "CONFIG_NSM": "m", "CONFIG_HW_RANDOM": "y"}
    assert kr.modules == ("drivers/misc/nsm.ko",)


@pytest.mark.parametrize("arch", ARCHES)
def test_aws_recipe_parses(arch: Arch) -> None:
    kr = parse_kernel_build(load_recipe(AWS), arch)
    assert kr.source_recipe is kr.recipe
    linux = kr.recipe.source(kr.source, arch)
    assert linux.url == "https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-6.6.79.tar.xz"
    config = kr.recipe.source(kr.base_config or "", arch)
    assert config.url is not None
    assert config.url.endswith(
        f"/f718dea60a9d9bb8b8682fd852ad793912f3c5db/kernel/microvm-kernel-config-{arch}"
    )
    assert dict(kr.options) == {"CONFIG_NSM": "m"}
    assert kr.patches == ("nsm-patch", "vsock-patch")
    assert kr.modules == ("drivers/misc/nsm.ko",)
    assert kr.expected_sha256 is None


def test_aws_recipe_refuses_to_fetch_unpinned_sources(tmp_path: Path) -> None:
    kr = parse_kernel_build(load_recipe(AWS), "x86_64")
    with pytest.raises(
        ConfigError, match=r"source 'linux' has no pin .*: run 'eifbuild lock --trust-on-first-use "
    ):
        resolve(kr, store=Store(tmp_path / "store"))


def _recipe(tmp_path: Path, build: dict[str, object], sources: dict[str, object] | None = None) -> object:
    data = {
        "recipe": {"name": "k"},
        "defaults": {"kernel_build": build},
        "sources": sources or {"tar": {"path": "linux.tar", "sha256": "ab" * 32}},
    }
    return parse_recipe(data, tmp_path / "k.toml")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        ({"source": "tar", "bse": "x"}, "key 'defaults.kernel_build.bse': unknown key; expected one of"),
        (
            {"source": "tar", "base": "mydefconfig"},
            "key 'defaults.kernel_build.base': expected one of tinyconfig",
        ),
        ({}, "key 'defaults.kernel_build.source': missing"),
        (
            {"source": "tar", "patches": "p"},
            "key 'defaults.kernel_build.patches': expected a list of strings",
        ),
        (
            {"source": "tar", "options": {"NSM": "m"}},
            "key 'defaults.kernel_build.options.NSM': expected CONFIG_",
        ),
        ({"source": "tar", "fragment": "frag"}, "recipe 'k' has no source 'frag'"),
        ({"source": "tarball"}, "recipe 'k' has no source 'tarball' (did you mean 'tar'?)"),
    ],
)
def test_kernel_build_errors_name_the_key(tmp_path: Path, build: dict[str, object], message: str) -> None:
    recipe = _recipe(tmp_path, build)
    with pytest.raises(ConfigError) as err:
        parse_kernel_build(recipe, "x86_64")  # type: ignore[arg-type]
    assert message in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "k.toml"))


def test_a_recipe_without_kernel_build_says_so(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "aws-nitro-cli-1.5.0.toml")
    with pytest.raises(
        ConfigError, match=r"does not say how to build a kernel \(no \[defaults.kernel_build\] table\)"
    ):
        parse_kernel_build(recipe, "x86_64")


def test_a_local_tarball_must_match_the_recorded_sha256(tmp_path: Path) -> None:
    kr = parse_kernel_build(load_recipe(DEMO), "x86_64")
    tarball = tmp_path / "linux-source-6.12.tar.xz"
    tarball.write_bytes(b"not the tarball")
    with pytest.raises(ConfigError, match="records tarball_sha256 c93391b6"):
        resolve(kr, store=Store(tmp_path / "store"), tarball=tarball)


def test_cli_kernel_without_a_build_table_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = REPO / "recipes" / "aws-nitro-cli-1.5.0.toml"
    assert main(["kernel", str(recipe), "--arch", "x86_64", "--cache", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {recipe}: recipe 'aws-nitro-cli-1.5.0' does not say how to build a kernel "
        "(no [defaults.kernel_build] table)\n"
    )
