"""Toolchains: zig cross-compiles, ELF checks, reproducible kernel builds and their config lint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .elf import ElfInfo, check_static_executable, read_elf
    from .kernel import (
        PREREQUISITES,
        KernelBuild,
        KernelSpec,
        build_kernel,
        fragment_mismatches,
        parse_config,
    )
    from .kernellint import RULES, Finding, LintReport, Rule, check_waivers, config_arch, lint_config
    from .kernelrecipe import KernelRecipe, RecipeKernel, build_from_recipe, parse_kernel_build
    from .zig import (
        INIT_CFLAGS,
        ZIG_CACHE_ENV,
        Binary,
        CompileSource,
        compile_c,
        compile_c_binary,
        compile_step,
        compile_to,
        init_from_source,
        zig_cache_dir,
        zig_global_cache_dir,
    )

__all__ = [
    "INIT_CFLAGS",
    "PREREQUISITES",
    "RULES",
    "ZIG_CACHE_ENV",
    "Binary",
    "CompileSource",
    "ElfInfo",
    "Finding",
    "KernelBuild",
    "KernelRecipe",
    "KernelSpec",
    "LintReport",
    "RecipeKernel",
    "Rule",
    "build_from_recipe",
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
    "parse_kernel_build",
    "read_elf",
    "zig_cache_dir",
    "zig_global_cache_dir",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
