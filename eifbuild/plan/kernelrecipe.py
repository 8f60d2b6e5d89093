"""How a recipe says to build its kernel: the ``[defaults.kernel_build]`` table.

```toml
[defaults.kernel_build]
source_recipe = "linux-source-6.1.toml"   # optional: the recipe holding `source` (relative path)
source = "tarball"                       # the kernel source tarball (a source name)
base = "tinyconfig"                      # a make config target …
base_config = "microvm-config"           # … or a source holding a whole .config
fragment = "fragment"                    # optional: a source with options merged on top
options = { CONFIG_NSM = "m" }           # optional: more options, merged after the fragment
patches = ["nsm-patch"]                  # optional: sources applied with patch -p1, in order
modules = ["drivers/misc/nsm.ko"]        # optional: modules to build and output
waive = ["CONFIG_IO_URING"]              # optional: kernel lint warnings this kernel accepts
apps = ["all"]                           # optional: kinds of app it must run (lint --app)
```

Every build is linted (:mod:`~eifbuild.toolchain.kernellint`) after ``olddefconfig``, before the
long ``make``: a lint error stops it (:class:`ConfigError`), warnings not waived are reported.

Every source name may be per-arch in its recipe (``[sources.fragment.x86_64]``). The recipe's
``kernel`` default names the pinned built kernel, which ``--check`` compares the build against.
Parsing is pure; :func:`resolve` fetches the sources (through the store) into a
:class:`~eifbuild.toolchain.kernel.KernelSpec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigError
from ..sources import Recipe, fetch_source, load_recipe
from ..toolchain import (
    BASE_TARGETS,
    KernelBuild,
    KernelSpec,
    LintReport,
    build_kernel,
    check_waivers,
    lint_config,
    parse_apps,
    parse_config,
)
from ..util.tomltable import TomlTables

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from ..arch import Arch
    from ..sources import Lock, Source
    from ..store import Downloader, SourceCache, Store

TABLE: Final = "kernel_build"
KEYS: Final = (
    "source_recipe",
    "source",
    "base",
    "base_config",
    "fragment",
    "options",
    "patches",
    "modules",
    "waive",
    "apps",
)
_OPTION: Final = re.compile(r"CONFIG_[A-Za-z0-9_]+")


@dataclass(frozen=True)
class KernelRecipe:
    """A recipe's kernel build, parsed for one arch (source names not yet fetched)."""

    recipe: Recipe
    arch: Arch
    source_recipe: Recipe
    source: str
    base: str = "tinyconfig"
    base_config: str | None = None
    fragment: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    patches: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    waive: frozenset[str] = frozenset()
    apps: tuple[str, ...] = ()

    @property
    def expected_sha256(self) -> str | None:
        """sha256 the recipe pins for the built kernel (its ``kernel`` default), if any."""
        name = self.recipe.defaults_for(self.arch).get("kernel")
        if not isinstance(name, str):
            return None
        return self.recipe.source(name, self.arch).pins.sha256

    @property
    def tarball_sha256(self) -> str | None:
        """sha256 the source recipe records for the tarball itself (``tarball_sha256``), if any."""
        value = self.source_recipe.defaults_for(self.arch).get("tarball_sha256")
        return value if isinstance(value, str) else None


def parse_kernel_build(recipe: Recipe, arch: Arch) -> KernelRecipe:
    """The ``kernel_build`` table of ``recipe`` for ``arch``; a :class:`ConfigError` names the key."""
    table = recipe.defaults_for(arch).get(TABLE)
    prefix = f"defaults.{TABLE}"
    if not isinstance(table, dict):
        msg = f"recipe {recipe.name!r} does not say how to build a kernel (no [{prefix}] table)"
        raise ConfigError(msg, path=recipe.path)
    ctx = _Ctx(TomlTables(recipe.path), prefix)
    ctx.check.only_keys(table, KEYS, prefix, style="list")
    source_recipe = recipe
    if "source_recipe" in table:
        other = recipe.path.parent / ctx.string(table, "source_recipe")
        source_recipe = load_recipe(other)
    base = ctx.string(table, "base", "tinyconfig")
    base_config = ctx.optional(table, "base_config")
    if base_config is None and base not in BASE_TARGETS:
        msg = f"expected one of {', '.join(BASE_TARGETS)} (or give base_config)"
        raise ConfigError(msg, path=recipe.path, key=f"{prefix}.base")
    parsed = KernelRecipe(
        recipe=recipe,
        arch=arch,
        source_recipe=source_recipe,
        source=ctx.string(table, "source"),
        base=base,
        base_config=base_config,
        fragment=ctx.optional(table, "fragment"),
        options=ctx.options(table),
        patches=ctx.strings(table, "patches"),
        modules=ctx.strings(table, "modules"),
        waive=check_waivers(ctx.strings(table, "waive"), path=recipe.path, key=f"{prefix}.waive"),
        apps=parse_apps(ctx.strings(table, "apps"), path=recipe.path, key=f"{prefix}.apps"),
    )
    _check_names(parsed)
    return parsed


def _check_names(kr: KernelRecipe) -> None:
    """Every named source exists for the arch (a typo fails now, not after a download)."""
    kr.source_recipe.source(kr.source, kr.arch)
    for name in (kr.base_config, kr.fragment, *kr.patches):
        if name is not None:
            kr.recipe.source(name, kr.arch)


@dataclass(frozen=True)
class _Ctx:
    """The checks of one ``kernel_build`` table (``prefix``: its dotted key); keys are names in it."""

    check: TomlTables
    prefix: str

    def string(self, table: Mapping[str, Any], key: str, default: str | None = None) -> str:
        if key not in table and default is not None:
            return default
        return self.check.required_string(table, key, self.prefix)

    def optional(self, table: Mapping[str, Any], key: str) -> str | None:
        return self.check.optional_string(table, key, self.prefix)

    def strings(self, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
        return self.check.string_list(table.get(key, []), f"{self.prefix}.{key}")

    def options(self, table: Mapping[str, Any]) -> dict[str, str]:
        value = table.get("options", {})
        if not isinstance(value, dict):
            msg = "expected a table of CONFIG_NAME = value"
            raise ConfigError(msg, path=self.check.path, key=f"{self.prefix}.options")
        for name, setting in value.items():
            if not _OPTION.fullmatch(name) or not isinstance(setting, str) or not setting:
                msg = 'expected CONFIG_NAME = "y", "m", "n" or a value'
                raise ConfigError(msg, path=self.check.path, key=f"{self.prefix}.options.{name}")
        return dict(value)


def resolve(
    kr: KernelRecipe,
    *,
    store: Store,
    tarball: Path | None = None,
    lock: Lock | None = None,
    cache: SourceCache | None = None,
    downloader: Downloader | None = None,
) -> KernelSpec:
    """Fetch (or take) the sources of ``kr`` into a :class:`KernelSpec`.

    ``tarball`` replaces fetching the kernel source (e.g. an installed /usr/src tarball); its
    sha256 must equal the source recipe's ``tarball_sha256`` when that is given.
    """
    from ..util.fsutil import hash_file  # noqa: PLC0415

    def pinned(recipe: Recipe, name: str) -> Source:
        source = recipe.source(name, kr.arch)
        return lock.apply(source) if lock is not None else source

    def get(recipe: Recipe, name: str) -> Path:
        return fetch_source(pinned(recipe, name), store=store, cache=cache, downloader=downloader).path

    if tarball is not None:
        source_path, source_sha = tarball, hash_file(tarball)
        expected = kr.tarball_sha256
        if expected is not None and expected != source_sha:
            msg = (
                f"sha256 {source_sha}, but recipe {kr.source_recipe.name!r} records tarball_sha256 {expected}"
            )
            raise ConfigError(msg, path=tarball)
    else:
        source = pinned(kr.source_recipe, kr.source)
        fetched = fetch_source(source, store=store, cache=cache, downloader=downloader)
        source_path, source_sha = fetched.path, fetched.sha256
    return KernelSpec(
        arch=kr.arch,
        source=source_path,
        source_sha256=source_sha,
        fragment=get(kr.recipe, kr.fragment) if kr.fragment else None,
        options=dict(kr.options),
        base=kr.base,
        base_config=get(kr.recipe, kr.base_config) if kr.base_config else None,
        patches=tuple(get(kr.recipe, p) for p in kr.patches),
        modules=kr.modules,
    )


@dataclass(frozen=True)
class RecipeKernel:
    """A kernel built from a recipe, and what the recipe pins for it (``None``: nothing)."""

    build: KernelBuild
    expected_sha256: str | None
    lint: LintReport

    @property
    def matches(self) -> bool | None:
        if self.expected_sha256 is None:
            return None
        return self.build.image_sha256 == self.expected_sha256


def build_from_recipe(
    path: Path,
    arch: Arch,
    *,
    store: Store,
    tarball: Path | None = None,
    jobs: int | None = None,
    lock: Lock | None = None,
) -> RecipeKernel:
    """Parse ``path``'s kernel build for ``arch``, fetch its sources and build it (or find it).

    The config is linted before ``make`` and again once built (a stored kernel too): a lint error
    is a :class:`ConfigError`; the report (warnings, option count, size) is in the result.
    """
    kr = parse_kernel_build(load_recipe(path), arch)
    spec = resolve(kr, store=store, tarball=tarball, lock=lock)
    built = build_kernel(store, spec, jobs=jobs, check_config=lambda config: lint_kernel(kr, config))
    config = parse_config(built.config.read_text(encoding="utf-8"))
    report = lint_kernel(kr, config, image_size=built.image.stat().st_size)
    return RecipeKernel(built, kr.expected_sha256, report)


def lint_kernel(kr: KernelRecipe, config: Mapping[str, str], *, image_size: int | None = None) -> LintReport:
    """Lint ``config`` with the recipe's waivers and modules; a :class:`ConfigError` on errors."""
    report = lint_config(
        config, kr.arch, waive=kr.waive, modules=kr.modules, image_size=image_size, apps=kr.apps
    )
    if report.errors:
        listed = "; ".join(str(finding) for finding in report.errors)
        msg = f"kernel lint ({kr.arch}): {len(report.errors)} error(s): {listed}"
        raise ConfigError(msg, path=kr.recipe.path)
    return report
