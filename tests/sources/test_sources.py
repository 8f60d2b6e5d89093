"""Recipes (parsing, the shipped AWS recipes), Debian package sources, and `eifbuild fetch`."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from source_helpers import FAST, LocalServer, make_deb

from eifbuild.cli import main
from eifbuild.errors import ConfigError, ToolError
from eifbuild.sources import Source, fetch_all, fetch_source, load_recipe
from eifbuild.sources.fetch import fetch_recipe
from eifbuild.sources.nar import parse_sri
from eifbuild.sources.recipe import Pins
from eifbuild.store import Downloader, SourceCache, Store, apt_download

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the shipped recipes -----------------------------------------------------------------------------
AWS_PINS = {
    ("init", "x86_64"): "755e650b732777b798cb9ec243ee402bef4826f789cf01a1e453bb724207c005",
    ("nsm", "x86_64"): "48904e520db2541ca4378da29d85791749408febc81987ade56cc5c556bd90df",
    ("kernel-config", "x86_64"): "9378dea490ed6c698c3d23b346ed08e49dae52d74a59cee2673b8a7b1951fc5b",
    ("cmdline", "x86_64"): "10d7d9dd205d4596d45997d17434f26207525f129d171a51f9859b1af9f4a07a",
    ("init", "aarch64"): "c478b57a645ec594df9c355824f571bb684ca559d35ab380bb0cda81a0dc590d",
    ("nsm", "aarch64"): "fa5475cbe0506ff3b7353b8ffa056da95eacd36626562f27326d73f384e8e49a",
    ("kernel-config", "aarch64"): "424e97785438d01e1436e738df0192142d81657a7b11d008f2cb9e5637b6354b",
    ("cmdline", "aarch64"): "e3a26db3f0375d58ed9756cb986a717a6286f38c6e54e82b457527467fc5ae4c",
}
BLOBS = "https://raw.githubusercontent.com/aws/aws-nitro-enclaves-cli/v1.5.0/blobs"
FILES = {"init": "init", "nsm": "nsm.ko", "cmdline": "cmdline"}


def test_aws_nitro_cli_recipe_pins_what_the_issue_lists() -> None:
    recipe = load_recipe(RECIPES / "aws-nitro-cli-1.5.0.toml")
    assert recipe.name == "aws-nitro-cli-1.5.0"
    assert recipe.arches == ("x86_64", "aarch64")
    for (name, arch), sha in AWS_PINS.items():
        src = recipe.source(name, arch)  # type: ignore[arg-type]
        assert src.pins == Pins(sha256=sha), (name, arch)
        image = "bzImage" if arch == "x86_64" else "Image"
        file = FILES.get(name, f"{image}.config")
        assert src.url == f"{BLOBS}/{arch}/{file}"
    kernel = recipe.source("kernel", "x86_64")
    assert kernel.url == "https://github.com/aws/aws-nitro-enclaves-cli/archive/refs/tags/v1.2.3.tar.gz"
    assert (kernel.strip, kernel.member) == (1, "blobs/x86_64/bzImage")
    assert kernel.pins == Pins(nar_sha256=parse_sri("sha256-+vQ9XK3la7K35p4VI3Mct5ij2o21zEYeqndI7RjTyiQ=")[1])
    arm = recipe.source("kernel", "aarch64")
    assert arm.url == f"{BLOBS}/aarch64/Image"
    assert not arm.pins.pinned
    assert recipe.defaults_for("x86_64")["cmdline"] == "cmdline"


def test_x86_cmdline_in_the_recipe_comment_is_the_pinned_file() -> None:
    text = (RECIPES / "aws-nitro-cli-1.5.0.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("#   reboot=k"))
    cmdline = line[4:] + "\n"
    assert hashlib.sha256(cmdline.encode()).hexdigest() == AWS_PINS[("cmdline", "x86_64")]


def test_aws_init_source_recipe() -> None:
    recipe = load_recipe(RECIPES / "aws-init-source.toml")
    src = recipe.source("init-c", "aarch64")
    assert src.arch is None
    assert src.url == (
        "https://raw.githubusercontent.com/aws/aws-nitro-enclaves-sdk-bootstrap/"
        "f718dea60a9d9bb8b8682fd852ad793912f3c5db/init/init.c"
    )
    assert src.pins.sha256 == "72343e84be7058dd1bfaae4074afd53251f106046eabc94b82651b67d8bab62f"
    assert src.filename == "init.c"
    assert recipe.for_arch("x86_64") == {"init-c": src}


def test_unpinned_aarch64_kernel_is_refused_naming_the_lock_command(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "aws-nitro-cli-1.5.0.toml")
    store = Store(tmp_path / "store")
    with pytest.raises(ConfigError) as info:
        fetch_recipe(recipe, "aarch64", store=store)
    path = RECIPES / "aws-nitro-cli-1.5.0.toml"
    assert str(info.value) == (
        f"{path}, key 'sources.kernel.aarch64': source 'kernel' for aarch64 has no pin "
        "(sha256, hash or nar_hash) in its recipe or in the lock file: run "
        f"'eifbuild lock --trust-on-first-use {path}' to fetch it once and record its sha256"
    )
    with pytest.raises(ConfigError, match="has no pin"):
        fetch_source(recipe.source("kernel", "aarch64"), store=store)
    assert list(store.keys()) == []


# -- parsing -------------------------------------------------------------------------------------------
GOOD = """
[recipe]
name = "demo"
description = "test"
[defaults]
cmdline = "console=ttyS0"
[defaults.aarch64]
cmdline = "console=ttyAMA0"
[sources.common]
url = "https://example.invalid/common.c"
mirrors = ["https://mirror.invalid/common.c", "file:///srv/common.c"]
sha256 = "{}"
[sources.kernel.x86_64]
url = "https://example.invalid/v1.tar.gz"
strip = 1
member = "blobs/bzImage"
nar_hash = "sha256-+vQ9XK3la7K35p4VI3Mct5ij2o21zEYeqndI7RjTyiQ="
[sources.kernel.arm64]
path = "local/Image"
hash = "sha512-{}"
[sources.deb]
apt = "linux-source-6.1"
version = "6.1.192-2"
sha256 = "{}"
member = "usr/src/linux-source-6.1.tar.xz"
""".format("a" * 64, "A" * 86 + "==", "b" * 64)


def test_recipe_shape(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "r.toml", GOOD))
    assert set(recipe.sources) == {"common", "kernel", "deb"}
    assert recipe.defaults_for("x86_64") == {"cmdline": "console=ttyS0"}
    assert recipe.defaults_for("aarch64") == {"cmdline": "console=ttyAMA0"}
    arm = recipe.source("kernel", "aarch64")
    assert arm.arch == "aarch64"
    assert arm.local_path == (tmp_path / "local" / "Image").absolute()
    assert arm.pins.sri is not None
    assert arm.pins.sri[0] == "sha512"
    common = recipe.source("common", "x86_64")
    assert common.origins == (
        "https://example.invalid/common.c",
        "https://mirror.invalid/common.c",
        "file:///srv/common.c",
    )
    deb = recipe.source("deb", "x86_64")
    assert (deb.origin, deb.filename) == ("apt:linux-source-6.1=6.1.192-2", "linux-source-6.1.tar.xz")
    assert [s.qualified_name for s in recipe.all_sources()] == [
        "common",
        "kernel.x86_64",
        "kernel.aarch64",
        "deb",
    ]


def test_step_key_depends_on_pins_not_location(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "r.toml", GOOD))
    common = recipe.source("common", "x86_64")
    moved = Source(
        "common", "other", tmp_path / "x.toml", url="https://elsewhere.invalid/common.c", pins=common.pins
    )
    assert moved.step().key == common.step().key
    repinned = Source("common", "demo", tmp_path / "r.toml", url=common.url, pins=Pins(sha256="c" * 64))
    assert repinned.step().key != common.step().key


BAD = {
    "no recipe table": ("[sources.a]\nurl='https://x.invalid/a'\n", "r.toml, key 'recipe': missing table"),
    "typo in a source key": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nsha265='%s'\n" % ("a" * 64),
        "r.toml, key 'sources.a.sha265': unknown key (did you mean 'sha256'?); expected one of url, mirrors, "
        "path, apt, version, sha256, hash, nar_hash, unpack, strip, member",
    ),
    "two origins": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\npath='a'\n",
        "r.toml, key 'sources.a': needs exactly one of url, path or apt (got url, path)",
    ),
    "bad sha256": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nsha256='abc'\n",
        "r.toml, key 'sources.a.sha256': expected 64 hex digits, got 'abc'",
    ),
    "sha256 and hash disagree": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nsha256='%s'\n"
        "hash='sha256-+vQ9XK3la7K35p4VI3Mct5ij2o21zEYeqndI7RjTyiQ='\n" % ("0" * 64),
        "r.toml, key 'sources.a.hash': hash 'sha256-+vQ9XK3la7K35p4VI3Mct5ij2o21zEYeqndI7RjTyiQ=' "
        "and sha256 '%s' disagree" % ("0" * 64),
    ),
    "bad nar hash": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nnar_hash='sha512-AAAA'\n",
        "key 'sources.a.nar_hash': expected an SRI hash 'sha256-<base64>', got 'sha512-AAAA'",
    ),
    "ftp url": (
        "[recipe]\nname='n'\n[sources.a]\nurl='ftp://x.invalid/a'\n",
        "r.toml, key 'sources.a.url': expected an https://, http:// or file:// URL, got 'ftp://x.invalid/a'",
    ),
    "apt without version": (
        "[recipe]\nname='n'\n[sources.a]\napt='hostname'\n",
        "r.toml, key 'sources.a.version': apt sources need the exact package version "
        "(see `apt-cache policy PACKAGE`)",
    ),
    "apt option injection": (
        "[recipe]\nname='n'\n[sources.a]\napt='-oFoo=bar'\nversion='1'\n",
        "r.toml, key 'sources.a.apt': '-oFoo=bar' is not a Debian package name",
    ),
    "unpack and member": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nunpack=true\nmember='x'\n",
        "r.toml, key 'sources.a.member': unpack and member exclude each other "
        "(member takes one file out of the archive)",
    ),
    "strip without archive use": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\nstrip=1\n",
        "r.toml, key 'sources.a.strip': strip only applies with unpack, member or nar_hash",
    ),
    "mixed arch tables": (
        "[recipe]\nname='n'\n[sources.a]\nurl='https://x.invalid/a'\n[sources.a.x86_64]\nurl='https://x.invalid/b'\n",
        "r.toml, key 'sources.a': mixes per-arch tables (x86_64) with source keys (url)",
    ),
    "non-string url": (
        "[recipe]\nname='n'\n[sources.a.x86_64]\nurl='https://x.invalid/a'\n[sources.a.aarch64]\nurl=1\n",
        "r.toml, key 'sources.a.aarch64.url': expected a non-empty string",
    ),
    "invalid toml": ("[recipe\n", "r.toml: invalid TOML: "),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipes_name_file_and_key(tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.toml", text)
    with pytest.raises(ConfigError) as info:
        load_recipe("r.toml")
    assert str(info.value).startswith(message) if case == "invalid toml" else message in str(info.value)


def test_missing_source_suggests_a_name(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path / "r.toml", GOOD))
    with pytest.raises(
        ConfigError, match=r"recipe 'demo' has no source 'kernal' \(did you mean 'kernel'\?\)"
    ):
        recipe.source("kernal", "x86_64")


# -- Debian packages -------------------------------------------------------------------------------
def test_deb_member_via_path_source(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    payload = b"pretend linux-source tarball"
    deb = make_deb(tmp_path / "linux-source.deb", {"usr/src/linux-source-6.1.tar.xz": payload})
    deb_sha = hashlib.sha256(deb.read_bytes()).hexdigest()
    text = f"""
[recipe]
name = "debian-kernel"
[sources.tarball]
path = "linux-source.deb"
sha256 = "{deb_sha}"
member = "usr/src/linux-source-6.1.tar.xz"
"""
    recipe = load_recipe(write(tmp_path / "r.toml", text))
    got = fetch_recipe(recipe, "x86_64", store=Store(tmp_path / "store"), cache=SourceCache(tmp_path / "c"))
    tarball = got["tarball"]
    assert tarball.path.name == "linux-source-6.1.tar.xz"
    assert tarball.path.read_bytes() == payload
    assert tarball.fetched_sha256 == deb_sha
    assert tarball.sha256 == hashlib.sha256(payload).hexdigest()


def test_an_apt_source_falls_back_to_its_mirrors(tmp_path: Path) -> None:
    """A version gone from the archive index: the .deb comes from a mirror (snapshot.debian.org)."""
    require_tool("apt-get")
    require_tool("dpkg-deb")
    payload = b"pretend linux-source tarball"
    deb = make_deb(tmp_path / "linux-source.deb", {"usr/src/linux-source-6.12.tar.xz": payload})
    text = f"""
[recipe]
name = "debian-kernel"
[sources.tarball]
apt = "hostname"
version = "0.0-eifbuild-none"
mirrors = ["{deb.as_uri()}"]
sha256 = "{hashlib.sha256(deb.read_bytes()).hexdigest()}"
member = "usr/src/linux-source-6.12.tar.xz"
"""
    recipe = load_recipe(write(tmp_path / "r.toml", text))
    assert recipe.source("tarball", "x86_64").origins == ("apt:hostname=0.0-eifbuild-none", deb.as_uri())
    got = fetch_recipe(recipe, "x86_64", store=Store(tmp_path / "store"), cache=SourceCache(tmp_path / "c"))
    assert got["tarball"].path.read_bytes() == payload


def test_mirrors_need_a_url_or_an_apt_package(tmp_path: Path) -> None:
    text = '[recipe]\nname = "r"\n[sources.x]\npath = "x"\nmirrors = ["https://example.invalid/x"]\n'
    with pytest.raises(ConfigError, match=r"key 'sources.x.mirrors': mirrors need a url or an apt package"):
        load_recipe(write(tmp_path / "r.toml", text))


def test_apt_download_failure_is_a_tool_error(tmp_path: Path) -> None:
    require_tool("apt-get")
    with pytest.raises(ToolError, match=r"^apt-get download hostname=0\.0-eifbuild-none failed: E: "):
        apt_download("hostname", "0.0-eifbuild-none", tmp_path)


def _apt_field(package: str, version: str, name: str) -> str:
    out = subprocess.run(
        ["apt-cache", "show", f"{package}={version}"], check=True, capture_output=True, text=True
    ).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(f"{name}:"))


@pytest.mark.slow
def test_real_apt_download_of_a_tiny_package(tmp_path: Path) -> None:
    """The one test that talks to Debian's archive (reachable here and in CI)."""
    require_tool("apt-get")
    policy = subprocess.run(["apt-cache", "policy", "hostname"], check=True, capture_output=True, text=True)
    version = next(ln.split(":", 1)[1].strip() for ln in policy.stdout.splitlines() if "Candidate:" in ln)
    deb_sha = _apt_field("hostname", version, "SHA256")
    src = Source(
        "hostname",
        "debian",
        tmp_path / "r.toml",
        apt="hostname",
        version=version,
        pins=Pins(sha256=deb_sha),
        member="bin/hostname",
    )
    got = fetch_source(src, store=Store(tmp_path / "store"), cache=SourceCache(tmp_path / "cache"))
    assert got.fetched_sha256 == deb_sha
    assert got.path.read_bytes().startswith(b"\x7fELF")


# -- eifbuild fetch ------------------------------------------------------------------------------------
def test_cli_fetch_prints_name_sha256_path(
    tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIFBUILD_SOURCES_DIR", str(tmp_path / "sources"))
    monkeypatch.chdir(tmp_path)
    a, b = b"x86 kernel", b"shared init.c"
    text = f"""
[recipe]
name = "cli"
[sources.kernel.x86_64]
url = "{server.serve("/k", a)}"
sha256 = "{hashlib.sha256(a).hexdigest()}"
[sources.init-c]
url = "{server.serve("/i", b)}"
sha256 = "{hashlib.sha256(b).hexdigest()}"
"""
    write(tmp_path / "r.toml", text)
    assert main(["fetch", "r.toml", "--arch", "x86_64", "--cache", "store"]) == 0
    lines = capsys.readouterr().out.splitlines()
    store = Store(tmp_path / "store")
    assert [ln.split()[:2] for ln in lines] == [
        ["kernel.x86_64", hashlib.sha256(a).hexdigest()],
        ["init-c", hashlib.sha256(b).hexdigest()],
    ]
    assert Path(lines[0].split()[2]).read_bytes() == a
    assert Path(lines[0].split()[2]).parent.parent.parent == store.root


def test_cli_fetch_mismatch_exits_2(
    tmp_path: Path, server: LocalServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EIFBUILD_SOURCES_DIR", str(tmp_path / "sources"))
    url = server.serve("/k", b"bytes")
    write(tmp_path / "r.toml", f'[recipe]\nname = "m"\n[sources.k]\nurl = "{url}"\nsha256 = "{"0" * 64}"\n')
    assert main(["fetch", str(tmp_path / "r.toml"), "--cache", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.splitlines()
    actual = hashlib.sha256(b"bytes").hexdigest()
    assert err == ["* fetch m/k", f"error: {url}: hash mismatch: expected {'0' * 64}, got {actual}"]


def test_fetch_all_refuses_before_downloading(tmp_path: Path, server: LocalServer) -> None:
    url = server.serve("/k", b"bytes")
    text = f'[recipe]\nname = "m"\n[sources.a]\nurl = "{url}"\nsha256 = "{hashlib.sha256(b"bytes").hexdigest()}"\n'
    text += f'[sources.b]\nurl = "{url}"\n'
    recipe = load_recipe(write(tmp_path / "r.toml", text))
    with pytest.raises(ConfigError, match="source 'b' has no pin"):
        fetch_all(
            recipe,
            store=Store(tmp_path / "s"),
            cache=SourceCache(tmp_path / "c"),
            downloader=Downloader(FAST),
        )
    assert server.requests == []
