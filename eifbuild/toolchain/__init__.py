"""Toolchains: zig cross-compiles, the enclave's init, ELF checks, reproducible kernel builds, config lint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .elf import ElfInfo, check_static_executable, read_elf
    from .init import EIFBUILD_INIT_C, INIT_CFLAGS, init_from_source
    from .kernel import (
        BASE_TARGETS,
        PREREQUISITES,
        KernelBuild,
        KernelSpec,
        build_kernel,
        fragment_mismatches,
        parse_config,
    )
    from .kernellint import RULES, Finding, LintReport, Rule, check_waivers, config_arch, lint_config
    from .zig import (
        ZIG_CACHE_ENV,
        Binary,
        CompileSource,
        compile_c,
        compile_c_binary,
        compile_step,
        compile_to,
        zig_cache_dir,
        zig_global_cache_dir,
    )

__all__ = [
    "BASE_TARGETS",
    "EIFBUILD_INIT_C",
    "INIT_CFLAGS",
    "PREREQUISITES",
    "RULES",
    "ZIG_CACHE_ENV",
    "Binary",
    "CompileSource",
    "ElfInfo",
    "Finding",
    "KernelBuild",
    "KernelSpec",
    "LintReport",
    "Rule",
    "build_kernel",
    "check_static_executable",
    "check_waivers",
    "compile_c",
    "compile_c_binary",
    "compile_step",
    "compile_to",
    "config_arch",
    "fragment_mismatches",
    "init_from_source",
    "lint_config",
    "parse_config",
    "read_elf",
    "zig_cache_dir",
    "zig_global_cache_dir",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
