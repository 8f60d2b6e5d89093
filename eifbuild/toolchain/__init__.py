"""Toolchains: zig cross-compiles, the enclave's init, ELF checks, reproducible kernel builds, config lint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .init import EIFBUILD_INIT_C, INIT_CFLAGS, init_from_source
    from .kernel import BASE_TARGETS, KernelBuild, KernelSpec, build_kernel, parse_config
    from .kernellint import APP_KINDS, LintReport, check_waivers, config_arch, lint_config, parse_apps
    from .zig import ZIG_CACHE_ENV, compile_c, compile_step, compile_to, zig_cache_dir, zig_global_cache_dir

EXPORTS = {
    "EIFBUILD_INIT_C": ".init",
    "INIT_CFLAGS": ".init",
    "init_from_source": ".init",
    "BASE_TARGETS": ".kernel",
    "KernelBuild": ".kernel",
    "KernelSpec": ".kernel",
    "build_kernel": ".kernel",
    "parse_config": ".kernel",
    "APP_KINDS": ".kernellint",
    "LintReport": ".kernellint",
    "check_waivers": ".kernellint",
    "config_arch": ".kernellint",
    "lint_config": ".kernellint",
    "parse_apps": ".kernellint",
    "ZIG_CACHE_ENV": ".zig",
    "compile_c": ".zig",
    "compile_step": ".zig",
    "compile_to": ".zig",
    "zig_cache_dir": ".zig",
    "zig_global_cache_dir": ".zig",
}

__all__ = [
    "APP_KINDS",
    "BASE_TARGETS",
    "EIFBUILD_INIT_C",
    "INIT_CFLAGS",
    "ZIG_CACHE_ENV",
    "KernelBuild",
    "KernelSpec",
    "LintReport",
    "build_kernel",
    "check_waivers",
    "compile_c",
    "compile_step",
    "compile_to",
    "config_arch",
    "init_from_source",
    "lint_config",
    "parse_apps",
    "parse_config",
    "zig_cache_dir",
    "zig_global_cache_dir",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
