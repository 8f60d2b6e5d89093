"""Toolchains: zig cross-compiles, ELF checks, reproducible kernel builds."""
