"""The ``kernel`` build step: config handling (pure), the step's key, and the build procedure.

The procedure tests run the real step (tar, make, the store) on a small fake kernel tree whose
Makefile imitates Kbuild's targets, so failures and the store's behaviour are checked in seconds.
The real rebuild of both demo kernels is in ``test_kernel_build.py`` (minutes, opt-in).
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import require_tool

from eifbuild.errors import ConfigError, InputError, ToolError
from eifbuild.store import Store
from eifbuild.toolchain import kernel
from eifbuild.toolchain.kernel import (
    ARM64_TEXT_OFFSET,
    KernelSpec,
    build_kernel,
    fragment_mismatches,
    kernel_step,
    merge_fragment,
    parse_config,
    set_text_offset,
)
from eifbuild.util.fsutil import hash_file

if TYPE_CHECKING:
    from collections.abc import Mapping

TOOL = {"clang": "test clang 1.0", "ld.lld": "test lld 1.0"}


# -- config files ----------------------------------------------------------------------------------
def test_parse_config_reads_set_and_unset_options() -> None:
    text = '# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n\nCONFIG_D=0x10\n'
    assert parse_config(text) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x y"', "CONFIG_D": "0x10"}


def test_strict_parse_names_the_bad_line() -> None:
    with pytest.raises(InputError) as err:
        parse_config("CONFIG_A=y\nVSOCK=y\n", path="frag.config", strict=True)
    assert str(err.value) == (
        "frag.config, line 2: expected CONFIG_NAME=value or '# CONFIG_NAME is not set', got 'VSOCK=y'"
    )


def test_strict_parse_rejects_an_option_given_twice() -> None:
    with pytest.raises(InputError, match=r"line 3: CONFIG_A is set twice"):
        parse_config("CONFIG_A=y\n# x\n# CONFIG_A is not set\n", path="f", strict=True)


def test_merge_replaces_the_base_lines_and_appends_the_fragment() -> None:
    base = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\n"
    merged = merge_fragment(base, {"CONFIG_B": "y", "CONFIG_C": "n", "CONFIG_D": "m"})
    assert merged == "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=m\n"


def test_mismatches_name_option_wanted_and_got() -> None:
    final = {"CONFIG_A": "y", "CONFIG_C": "m"}
    wanted = {"CONFIG_A": "y", "CONFIG_B": "y", "CONFIG_C": "y", "CONFIG_X": "n"}
    assert fragment_mismatches(final, wanted) == ["CONFIG_B=y (got not set)", "CONFIG_C=y (got m)"]


def test_text_offset_is_written_into_the_arm64_header() -> None:
    image = bytearray(64)
    image[56:60] = b"ARM\x64"
    set_text_offset(image)
    assert struct.unpack_from("<Q", image, 8)[0] == ARM64_TEXT_OFFSET == 0x200000
    with pytest.raises(ToolError, match="not an arm64 Image"):
        set_text_offset(bytearray(64))


# -- the step key ----------------------------------------------------------------------------------
def _spec(tmp_path: Path, **changes: object) -> KernelSpec:
    frag = tmp_path / "frag.config"
    if not frag.exists():
        frag.write_text("CONFIG_A=y\n")
    fields: dict[str, object] = {
        "arch": "x86_64",
        "source": tmp_path / "linux.tar",
        "source_sha256": "ab" * 32,
        "fragment": frag,
    }
    fields.update(changes)
    return KernelSpec(**fields)  # type: ignore[arg-type]


def test_the_key_covers_source_fragment_arch_options_and_toolchain(tmp_path: Path) -> None:
    key = kernel_step(_spec(tmp_path), TOOL).key
    assert kernel_step(_spec(tmp_path), TOOL).key == key
    other_frag = tmp_path / "other.config"
    other_frag.write_text("CONFIG_A=n\n")
    for changed in (
        kernel_step(_spec(tmp_path, source_sha256="cd" * 32), TOOL),
        kernel_step(_spec(tmp_path, fragment=other_frag), TOOL),
        kernel_step(_spec(tmp_path, arch="aarch64"), TOOL),
        kernel_step(_spec(tmp_path, options={"CONFIG_NSM": "m"}), TOOL),
        kernel_step(_spec(tmp_path, base="allnoconfig"), TOOL),
        kernel_step(_spec(tmp_path), {**TOOL, "clang": "test clang 2.0"}),
    ):
        assert changed.key != key


def test_the_key_holds_no_machine_path(tmp_path: Path) -> None:
    step = kernel_step(_spec(tmp_path), TOOL)
    assert str(tmp_path) not in repr(step.describe())
    assert step.describe()["params"]["kbuild"]["KBUILD_BUILD_TIMESTAMP"] == "1970-01-01 00:00:00 UTC"


def test_spec_rejects_unknown_base_and_odd_module_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown base config 'mydefconfig'"):
        _spec(tmp_path, base="mydefconfig")
    with pytest.raises(ConfigError, match="is not a module path"):
        _spec(tmp_path, modules=("../nsm.ko",))


def test_missing_tools_give_the_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError) as err:
        kernel.check_prerequisites()
    assert "apt-get install clang lld llvm make flex bison bc libelf-dev" in str(err.value)
    with pytest.raises(ToolError, match=r"^clang not found: building a kernel needs apt-get install"):
        kernel.toolchain_identity()


# -- the build, on a fake kernel tree ----------------------------------------------------------------
FAKE_MAKEFILE = r"""
# Imitates the Kbuild targets the kernel step runs (make -C <src> O=<obj> ARCH=… LLVM=1 <target>).
tinyconfig:
	printf 'CONFIG_BASE=y\n# CONFIG_A is not set\n' > $(O)/.config
olddefconfig:
	sed -i '/^CONFIG_NEEDS_DEP=y$$/d' $(O)/.config
	echo "CONFIG_LLVM=$(LLVM) CONFIG_WHO=$$KBUILD_BUILD_USER" >> $(O)/.config
bzImage:
	@if grep -q '^CONFIG_FAIL=y' $(O)/.config; then echo 'drivers/x.c:1: error: this went wrong' >&2; exit 2; fi
	mkdir -p $(O)/arch/x86/boot
	cat $(O)/.config > $(O)/arch/x86/boot/bzImage
Image:
	mkdir -p $(O)/arch/arm64/boot
	head -c 56 /dev/zero > $(O)/arch/arm64/boot/Image
	printf 'ARM\144' >> $(O)/arch/arm64/boot/Image
	cat $(O)/.config >> $(O)/arch/arm64/boot/Image
"""


def _fake_tarball(tmp_path: Path) -> Path:
    path = tmp_path / "linux-fake.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("Makefile", FAKE_MAKEFILE), ("Kconfig", "# fake\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"linux-fake/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _fake_spec(tmp_path: Path, fragment: str, arch: str = "x86_64") -> KernelSpec:
    require_tool("make")
    tarball = _fake_tarball(tmp_path)
    frag = tmp_path / f"frag-{abs(hash(fragment))}.config"
    frag.write_text(fragment)
    return KernelSpec(arch=arch, source=tarball, source_sha256=hash_file(tarball), fragment=frag)  # type: ignore[arg-type]


def test_a_build_merges_the_fragment_and_lands_in_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = _fake_spec(tmp_path, "CONFIG_A=y\nCONFIG_NEW=m\n")
    built = build_kernel(store, spec, jobs=1, tool=TOOL)
    config = built.config.read_text()
    assert parse_config(config) == {
        "CONFIG_BASE": "y",
        "CONFIG_A": "y",
        "CONFIG_NEW": "m",
        "CONFIG_LLVM": "1 CONFIG_WHO=eifbuild",
    }
    assert built.image.read_text() == config
    assert built.config.name == "bzImage.config"
    assert store.get(built.key) is not None
    again = build_kernel(store, spec, jobs=2, tool=TOOL)  # jobs is not in the key: a store hit
    assert again.key == built.key
    assert again.image_sha256 == built.image_sha256 == hash_file(built.image)


def test_arm64_images_get_text_offset_2mib(tmp_path: Path) -> None:
    built = build_kernel(
        Store(tmp_path / "store"), _fake_spec(tmp_path, "CONFIG_A=y\n", "aarch64"), tool=TOOL
    )
    data = built.image.read_bytes()
    assert built.image.name == "Image"
    assert struct.unpack_from("<Q", data, 8)[0] == 0x200000
    assert data[56:60] == b"ARM\x64"


def test_an_option_olddefconfig_drops_is_an_error_naming_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = _fake_spec(tmp_path, "CONFIG_A=y\nCONFIG_NEEDS_DEP=y\n")
    with pytest.raises(ConfigError) as err:
        build_kernel(store, spec, tool=TOOL)
    assert str(err.value) == (
        f"{spec.fragment}: 1 option(s) did not survive olddefconfig (missing dependencies?): "
        "CONFIG_NEEDS_DEP=y (got not set)"
    )
    assert list(store.keys()) == []


def test_check_config_sees_the_final_config_and_can_stop_the_build(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = _fake_spec(tmp_path, "CONFIG_A=y\n")
    seen: list[dict[str, str]] = []

    def refuse(config: Mapping[str, str]) -> None:
        seen.append(dict(config))
        msg = "kernel lint (x86_64): 1 error(s): CONFIG_NSM is not set"
        raise ConfigError(msg)

    with pytest.raises(ConfigError, match="CONFIG_NSM is not set"):
        build_kernel(store, spec, tool=TOOL, check_config=refuse)
    assert seen == [{"CONFIG_BASE": "y", "CONFIG_A": "y", "CONFIG_LLVM": "1 CONFIG_WHO=eifbuild"}]
    assert list(store.keys()) == []
    build_kernel(store, spec, tool=TOOL, check_config=seen.append)
    assert len(seen) == 2


def test_a_failing_make_reports_its_output_tail_and_stores_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    spec = _fake_spec(tmp_path, "CONFIG_FAIL=y\n")
    with pytest.raises(ToolError) as err:
        build_kernel(store, spec, tool=TOOL)
    assert str(err.value) == (
        "kernel build (x86_64): make bzImage failed (exit 2): drivers/x.c:1: error: this went wrong"
    )
    assert "this went wrong" in err.value.output
    assert err.value.returncode == 2
    assert list(store.keys()) == []
    assert not any(store.tmp_dir.iterdir())


def test_a_tarball_that_is_not_linux_is_refused(tmp_path: Path) -> None:
    require_tool("make")
    tarball = tmp_path / "other.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("pkg/README")
        tar.addfile(info, io.BytesIO(b""))
    spec = KernelSpec(arch="x86_64", source=tarball, source_sha256=hash_file(tarball))
    with pytest.raises(InputError, match="not a Linux source tarball"):
        build_kernel(Store(tmp_path / "store"), spec, tool=TOOL)


def test_a_tarball_that_changed_since_it_was_pinned_is_refused(tmp_path: Path) -> None:
    spec = _fake_spec(tmp_path, "CONFIG_A=y\n")
    with tarfile.open(spec.source, "w:gz"):
        pass
    with pytest.raises(ConfigError, match=f"sha256 [0-9a-f]{{64}}, expected {spec.source_sha256}"):
        build_kernel(Store(tmp_path / "store"), spec, tool=TOOL)
