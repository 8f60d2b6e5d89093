"""Kernel config lint: the rules on the committed demo configs, on broken configs, its CLI, and
the lint every recipe build runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import require_tool

from eifbuild.arch import ARCHES, Arch, info
from eifbuild.cli import EXIT_ERROR, EXIT_FAILED, EXIT_OK, main
from eifbuild.errors import ConfigError
from eifbuild.plan.kernelrecipe import lint_kernel, parse_kernel_build
from eifbuild.sources.recipe import parse_recipe
from eifbuild.toolchain import (
    APP_KINDS,
    check_waivers,
    config_arch,
    kernel,
    lint_config,
    parse_apps,
    parse_config,
)
from eifbuild.toolchain.kernellint import APP_RULES, RULES, WAIVABLE
from eifbuild.util.fsutil import hash_file

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "examples" / "kernel"


def _demo_config_path(arch: Arch, profile: str = "tiny") -> Path:
    folder = KERNELS / arch if profile == "tiny" else KERNELS / profile / arch
    return folder / f"{info(arch).kernel_image}.config"


def _demo_config(arch: Arch, profile: str = "tiny") -> dict[str, str]:
    return parse_config(_demo_config_path(arch, profile).read_text())


def _options(findings: object) -> list[str]:
    return [f.option for f in findings]  # type: ignore[attr-defined]


# -- the rules on the demo kernels ------------------------------------------------------------------
@pytest.mark.parametrize("profile", ["tiny", "app"])
@pytest.mark.parametrize("arch", ARCHES)
def test_the_demo_configs_are_clean(arch: Arch, profile: str) -> None:
    config = _demo_config(arch, profile)
    report = lint_config(config, arch, modules=())
    assert report.findings == ()
    assert config["CONFIG_NSM"] == "y"
    assert config_arch(config) == arch
    assert 300 < report.built_in < 900
    assert report.modules == 0


@pytest.mark.parametrize("arch", ARCHES)
def test_the_app_kernels_have_what_every_kind_of_app_needs(arch: Arch) -> None:
    report = lint_config(_demo_config(arch, "app"), arch, modules=(), apps=APP_KINDS)
    assert report.findings == ()
    assert report.apps == tuple(APP_KINDS)
    assert ", for all apps: 0 errors, 0 warnings" in report.summary


# what the tiny kernels lack for apps (the app profile adds it; aarch64 is SMP anyway)
TINY_LACKS = [
    "CONFIG_BINFMT_SCRIPT",
    "CONFIG_SMP",
    "CONFIG_HIGH_RES_TIMERS",
    "CONFIG_ADVISE_SYSCALLS",
    "CONFIG_RSEQ",
    "CONFIG_MEMBARRIER",
    "CONFIG_INET",
    "CONFIG_IPV6",
    "CONFIG_INOTIFY_USER",
    "CONFIG_AIO",
    "CONFIG_SYSVIPC",
    "CONFIG_POSIX_MQUEUE",
    "CONFIG_SECCOMP",
    "CONFIG_SECCOMP_FILTER",
]


@pytest.mark.parametrize("arch", ARCHES)
def test_the_tiny_kernels_say_what_apps_they_cannot_run(arch: Arch) -> None:
    report = lint_config(_demo_config(arch), arch, apps=APP_KINDS)
    assert report.errors == ()
    expected = TINY_LACKS if arch == "x86_64" else [o for o in TINY_LACKS if o != "CONFIG_SMP"]
    if arch == "aarch64":
        expected += ["CONFIG_RTC_DRV_PL031", "CONFIG_RTC_HCTOSYS"]
    assert _options(report.warnings) == expected
    script = report.warnings[0]
    assert str(script) == (
        "CONFIG_BINFMT_SCRIPT is not set: `#!` scripts: entrypoint scripts, pip's and npm's console "
        "scripts, `#!/usr/bin/env` launchers (needed by script, python, node apps; wanted: y)"
    )
    # without kinds of app, nothing of this is checked
    assert lint_config(_demo_config(arch), arch).findings == ()


def test_app_findings_name_only_the_kinds_asked_for() -> None:
    config = _demo_config("aarch64")
    report = lint_config(config, "aarch64", apps=("go", "network"))
    assert _options(report.warnings) == [
        "CONFIG_HIGH_RES_TIMERS",
        "CONFIG_ADVISE_SYSCALLS",
        "CONFIG_INET",
        "CONFIG_IPV6",
        "CONFIG_RTC_DRV_PL031",
        "CONFIG_RTC_HCTOSYS",
    ]
    assert [f.apps for f in report.warnings] == [("go",), ("go",), ("network",), ("network",)] + [
        ("go", "network")
    ] * 2
    assert str(report.warnings[-1]).endswith("(needed by go, network apps; wanted: y)")
    assert ", for go, network apps: 0 errors, 6 warnings" in report.summary
    # an app kernel option waived like any warning
    waived = lint_config(config, "aarch64", apps=("network",), waive={"CONFIG_IPV6"})
    assert _options(waived.waived) == ["CONFIG_IPV6"]
    assert check_waivers(["CONFIG_AIO"]) == {"CONFIG_AIO"}


def test_parse_apps() -> None:
    assert parse_apps(["network,script", "go"]) == ("script", "go", "network")
    assert parse_apps(["jvm", "all"]) == tuple(APP_KINDS)
    assert parse_apps([]) == ()
    with pytest.raises(ConfigError, match=r"unknown kind of app pyton; kinds: script, glibc, python"):
        parse_apps(["python,pyton"])


def test_the_app_rules_are_well_formed() -> None:
    avoided = {r.option for r in RULES if r.severity == "warning"}
    for rule in APP_RULES:
        assert re.fullmatch(r"CONFIG_[A-Z0-9_]+", rule.option), rule
        assert rule.severity == "warning"
        assert rule.allowed == {"y"}
        assert rule.apps
        assert rule.apps <= set(APP_KINDS), rule
        assert rule.option not in avoided, rule
        assert rule.option in WAIVABLE
    # every kind of app needs something
    assert set().union(*(rule.apps for rule in APP_RULES)) == set(APP_KINDS)


def test_the_rules_are_well_formed() -> None:
    for rule in RULES:
        assert re.fullmatch(r"CONFIG_[A-Z0-9_]+", rule.option), rule
        assert rule.why
        assert rule.arches
    needed = {r.option for r in RULES if r.severity == "error" and r.when is None}
    avoided = {r.option for r in RULES if r.severity == "warning" and r.when is None}
    assert not needed & avoided


# -- broken configs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHES)
def test_a_missing_needed_option_is_an_error_naming_it(arch: Arch) -> None:
    config = _demo_config(arch)
    del config["CONFIG_VIRTIO_VSOCKETS"]
    config["CONFIG_DEVTMPFS"] = "n"
    report = lint_config(config, arch)
    assert _options(report.errors) == ["CONFIG_DEVTMPFS", "CONFIG_VIRTIO_VSOCKETS"]
    assert str(report.errors[0]) == "CONFIG_DEVTMPFS is not set: init mounts /dev as devtmpfs (wanted: y)"
    assert report.warnings == ()


@pytest.mark.parametrize("arch", ARCHES)
def test_a_forbidden_option_is_a_warning_naming_it(arch: Arch) -> None:
    config = {**_demo_config(arch), "CONFIG_IO_URING": "y"}
    report = lint_config(config, arch)
    assert report.errors == ()
    assert _options(report.warnings) == ["CONFIG_IO_URING"]
    assert str(report.warnings[0]).startswith("CONFIG_IO_URING=y: io_uring: ")
    assert str(report.warnings[0]).endswith("(wanted: not set)")


@pytest.mark.parametrize("option", ["CONFIG_KEXEC", "CONFIG_KEXEC_FILE"])
@pytest.mark.parametrize("arch", ARCHES)
def test_kexec_is_an_error_a_recipe_may_waive_by_name(arch: Arch, option: str) -> None:
    """#21: a kexec'd kernel replaces the measured one while attestation still shows the launch PCRs."""
    config = {**_demo_config(arch), option: "y"}
    report = lint_config(config, arch)
    assert _options(report.errors) == [option]
    assert "attestation still shows the launch PCRs" in str(report.errors[0])
    waived = lint_config(config, arch, waive={option})
    assert (waived.findings, _options(waived.waived)) == ((), [option])
    assert check_waivers([option]) == {option}


def test_a_waived_warning_is_reported_as_waived() -> None:
    config = {**_demo_config("x86_64"), "CONFIG_IO_URING": "y"}
    report = lint_config(config, "x86_64", waive={"CONFIG_IO_URING"})
    assert report.findings == ()
    assert _options(report.waived) == ["CONFIG_IO_URING"]
    assert report.summary.endswith(": 0 errors, 0 warnings (1 waived)")


def test_nsm_built_in_or_as_a_module_with_module_loading() -> None:
    base = _demo_config("x86_64")
    nothing = lint_config({**base, "CONFIG_NSM": "n"}, "x86_64")
    assert _options(nothing.errors) == ["CONFIG_NSM"]
    assert str(nothing.errors[0]).endswith("(wanted: y or m)")
    # built in: module loading is only a wider attack surface
    loading = lint_config({**base, "CONFIG_MODULES": "y"}, "x86_64")
    assert (_options(loading.errors), _options(loading.warnings)) == ([], ["CONFIG_MODULES"])
    # a module: init must be able to load it, and the build must output it
    module = {**base, "CONFIG_NSM": "m"}
    assert _options(lint_config(module, "x86_64").errors) == ["CONFIG_MODULES"]
    module["CONFIG_MODULES"] = "y"
    # nsm.ko depends on rng-core: as a module too, init (which loads nsm.ko alone) fails
    assert _options(lint_config({**module, "CONFIG_HW_RANDOM": "m"}, "x86_64").errors) == ["CONFIG_HW_RANDOM"]
    assert lint_config(module, "x86_64").findings == ()
    assert lint_config(module, "x86_64", modules=["drivers/misc/nsm.ko"]).findings == ()
    missing = lint_config(module, "x86_64", modules=[])
    assert [str(f) for f in missing.errors] == [
        "CONFIG_NSM=m: the build must output drivers/misc/nsm.ko (add it to the kernel build's modules) "
        "(wanted: y, or m with drivers/misc/nsm.ko)"
    ]


def test_arch_specific_rules() -> None:
    arm = _demo_config("aarch64")
    del arm["CONFIG_ARM_ARCH_TIMER"]
    assert _options(lint_config(arm, "aarch64").errors) == ["CONFIG_ARM_ARCH_TIMER"]
    x86 = {**_demo_config("x86_64"), "CONFIG_64BIT": "n", "CONFIG_IA32_EMULATION": "y"}
    report = lint_config(x86, "x86_64")
    assert (_options(report.errors), _options(report.warnings)) == (
        ["CONFIG_64BIT"],
        ["CONFIG_IA32_EMULATION"],
    )
    assert config_arch({"CONFIG_X86": "y", "CONFIG_X86_32": "y"}) == "x86_64"
    assert config_arch({}) is None


def test_only_warnings_can_be_waived() -> None:
    assert check_waivers(["CONFIG_DEBUG_FS"]) == {"CONFIG_DEBUG_FS"}
    with pytest.raises(ConfigError, match=r"cannot waive CONFIG_NSM: needed options \(errors\) cannot be"):
        check_waivers(["CONFIG_NSM"])
    with pytest.raises(ConfigError, match=r"cannot waive CONFIG_FOO: no lint warning names them; waivable: "):
        check_waivers(["CONFIG_FOO"])


# -- recipes -----------------------------------------------------------------------------------------
def _kernel_recipe(tmp_path: Path, **build: object) -> object:
    data = {
        "recipe": {"name": "k"},
        "defaults": {"kernel_build": {"source": "tar", **build}},
        "sources": {"tar": {"path": "linux.tar", "sha256": "ab" * 32}},
    }
    return parse_recipe(data, tmp_path / "k.toml")


def test_a_recipe_waives_warnings_and_its_build_fails_on_errors(tmp_path: Path) -> None:
    recipe = _kernel_recipe(tmp_path, waive=["CONFIG_USER_NS"])
    kr = parse_kernel_build(recipe, "x86_64")  # type: ignore[arg-type]
    assert kr.waive == {"CONFIG_USER_NS"}
    config = {**_demo_config("x86_64"), "CONFIG_USER_NS": "y", "CONFIG_DEBUG_FS": "y"}
    report = lint_kernel(kr, config, image_size=1234)
    assert (_options(report.warnings), _options(report.waived)) == (["CONFIG_DEBUG_FS"], ["CONFIG_USER_NS"])
    assert ", kernel 1,234 bytes: 0 errors, 1 warning (1 waived)" in report.summary
    del config["CONFIG_BLK_DEV_INITRD"]
    with pytest.raises(
        ConfigError, match=r"k\.toml: kernel lint \(x86_64\): 1 error\(s\): CONFIG_BLK_DEV_INITRD"
    ):
        lint_kernel(kr, config)


def test_a_recipe_names_the_kinds_of_app_its_kernel_runs(tmp_path: Path) -> None:
    kr = parse_kernel_build(_kernel_recipe(tmp_path, apps=["network", "script"]), "x86_64")  # type: ignore[arg-type]
    assert kr.apps == ("script", "network")
    report = lint_kernel(kr, _demo_config("x86_64"))
    assert _options(report.warnings) == ["CONFIG_BINFMT_SCRIPT", "CONFIG_INET", "CONFIG_IPV6"]
    with pytest.raises(ConfigError, match=r"key 'defaults.kernel_build.apps': unknown kind of app cobol"):
        parse_kernel_build(_kernel_recipe(tmp_path, apps=["cobol"]), "x86_64")  # type: ignore[arg-type]


def test_a_recipe_cannot_waive_an_error(tmp_path: Path) -> None:
    recipe = _kernel_recipe(tmp_path, waive=["CONFIG_VSOCKETS"])
    with pytest.raises(ConfigError, match=r"key 'defaults.kernel_build.waive': cannot waive CONFIG_VSOCKETS"):
        parse_kernel_build(recipe, "x86_64")  # type: ignore[arg-type]


# -- the command line --------------------------------------------------------------------------------
def test_cli_lint_of_a_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    path = _demo_config_path("x86_64")
    assert main(["kernel", "lint", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    size = (KERNELS / "x86_64" / "bzImage").stat().st_size
    assert re.fullmatch(
        rf"{re.escape(str(path))} \(x86_64\): \d+ built-in options, 0 modules, kernel {size:,} bytes: "
        r"0 errors, 0 warnings\n",
        out,
    )


def test_cli_lint_errors_exit_1_warnings_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = _demo_config_path("aarch64").read_text()
    warned = tmp_path / "warned.config"
    warned.write_text(text + "CONFIG_BPF_SYSCALL=y\n")
    assert main(["kernel", "lint", str(warned)]) == EXIT_OK
    assert capsys.readouterr().out.startswith("warning: CONFIG_BPF_SYSCALL=y: the bpf() system call")
    assert main(["kernel", "lint", str(warned), "--waive", "CONFIG_BPF_SYSCALL"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("waived: CONFIG_BPF_SYSCALL=y")
    assert out.endswith(": 0 errors, 0 warnings (1 waived)\n")
    broken = tmp_path / "broken.config"
    broken.write_text(text.replace("CONFIG_NSM=y", "# CONFIG_NSM is not set"))
    assert main(["kernel", "lint", str(broken)]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert out.startswith("error: CONFIG_NSM is not set: the Nitro Secure Module driver")
    last = out.splitlines()[-1]
    assert last.startswith(f"{broken} (aarch64): ")
    assert last.endswith(": 1 error, 0 warnings")


def test_cli_lint_for_kinds_of_app(capsys: pytest.CaptureFixture[str]) -> None:
    path = _demo_config_path("x86_64")
    assert main(["kernel", "lint", str(path), "--app", "script", "--app", "network"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[:-1] == [
        "warning: CONFIG_BINFMT_SCRIPT is not set: `#!` scripts: entrypoint scripts, pip's and npm's "
        "console scripts, `#!/usr/bin/env` launchers (needed by script apps; wanted: y)",
        "warning: CONFIG_INET is not set: IPv4: TCP and UDP, on 127.0.0.1 (needed by network apps; wanted: y)",
        "warning: CONFIG_IPV6 is not set: IPv6: ::1 and dual-stack sockets (Java and Node listen on ::) "
        "(needed by network apps; wanted: y)",
    ]
    assert lines[-1].endswith(", for script, network apps: 0 errors, 3 warnings")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kernel", "lint"], "kernel lint needs the .config file to check"),
        (["kernel", "lint", "/nonexistent.config", "--arch", "x86_64"], "cannot read kernel config"),
        (["kernel", "lint", "{x86}", "--arch", "aarch64"], "is a config for x86_64, not aarch64"),
        (["kernel", "lint", "{x86}", "--check"], "--check only applies to building a recipe"),
        (["kernel", "lint", "{x86}", "--waive", "CONFIG_NSM"], "cannot waive CONFIG_NSM"),
        (["kernel", "recipes/demo.toml", "--waive", "CONFIG_KEXEC"], "--waive only applies to kernel lint"),
        (["kernel", "recipes/demo.toml", "--app", "go"], "--app only applies to kernel lint"),
        (["kernel", "lint", "{x86}", "--app", "go,rust"], "unknown kind of app rust; kinds: script,"),
    ],
)
def test_cli_usage_problems_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{x86}", str(_demo_config_path("x86_64"))) for a in argv]
    assert main(argv) == EXIT_ERROR
    assert message in capsys.readouterr().err


# -- every recipe build is linted (a fake kernel tree, see test_kernel.py) ---------------------------
NEEDED_X86 = sorted(
    r.option
    for r in RULES
    if r.severity == "error" and "x86_64" in r.arches and r.when is None and "y" in r.allowed
)


def _fake_recipe(tmp_path: Path, fragment: str, waive: str = "") -> Path:
    from test_kernel import _fake_tarball  # noqa: PLC0415 - the fake Kbuild tree lives there

    tarball = _fake_tarball(tmp_path)
    (tmp_path / "frag.config").write_text(fragment)
    text = f"""
[recipe]
name = "fake"
[defaults.kernel_build]
source = "linux"
fragment = "fragment"
{waive}
[sources.linux]
path = "{tarball.name}"
sha256 = "{hash_file(tarball)}"
[sources.fragment]
path = "frag.config"
sha256 = "{hash_file(tmp_path / "frag.config")}"
"""
    (tmp_path / "fake.toml").write_text(text)
    return tmp_path / "fake.toml"


@pytest.fixture
def fake_toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("make")
    monkeypatch.setattr(kernel, "check_prerequisites", lambda: None)
    monkeypatch.setattr(kernel, "toolchain_identity", lambda: {"clang": "test 1", "ld.lld": "test 1"})


@pytest.mark.usefixtures("fake_toolchain")
def test_a_recipe_build_with_lint_errors_stops_before_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = _fake_recipe(tmp_path, "CONFIG_BINFMT_ELF=y\n")
    argv = ["kernel", str(recipe), "--arch", "x86_64", "--cache", str(tmp_path / "store")]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"error: {recipe}: kernel lint (x86_64): {len(NEEDED_X86) - 1} error(s): " in err
    assert "CONFIG_BINFMT_ELF" not in err
    assert not list((tmp_path / "store").glob("*/*/bzImage"))


@pytest.mark.usefixtures("fake_toolchain")
def test_a_recipe_build_reports_its_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fragment = "".join(f"{option}=y\n" for option in NEEDED_X86) + "CONFIG_DEBUG_FS=y\nCONFIG_IO_URING=y\n"
    recipe = _fake_recipe(tmp_path, fragment, waive='waive = ["CONFIG_IO_URING"]')
    argv = ["kernel", str(recipe), "--arch", "x86_64", "--cache", str(tmp_path / "store")]
    assert main(argv) == EXIT_OK
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert re.fullmatch(r"[0-9a-f]{64}  x86_64/bzImage", out[0])
    assert re.fullmatch(
        rf"lint  x86_64/bzImage: {len(NEEDED_X86) + 3} built-in options, 0 modules, kernel \d+ bytes: "
        r"0 errors, 1 warning \(1 waived\)",
        out[1],
    )
    assert "x86_64/bzImage: warning: CONFIG_DEBUG_FS=y: debugfs exposes kernel internals" in captured.err
    assert "x86_64/bzImage: waived: CONFIG_IO_URING=y" in captured.err
