"""Toolchains: zig cross-compiles, ELF checks, reproducible kernel builds."""

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
    "ZIG_CACHE_ENV",
    "Binary",
    "CompileSource",
    "ElfInfo",
    "KernelBuild",
    "KernelRecipe",
    "KernelSpec",
    "RecipeKernel",
    "build_from_recipe",
    "build_kernel",
    "check_static_executable",
    "compile_c",
    "compile_c_binary",
    "compile_step",
    "compile_to",
    "fragment_mismatches",
    "init_from_source",
    "parse_config",
    "parse_kernel_build",
    "read_elf",
    "zig_cache_dir",
    "zig_global_cache_dir",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
