"""Cold vs warm: the demo build (demo kernels, eifbuild's init and the hello app compiled by zig).

The project is the repo's own ``eif.toml`` (copied with ``recipes/`` and ``examples/`` into the
scratch dir), or, while the repo has none, an equivalent one written here. Each *cold* run starts
with an empty store, an empty download cache and an empty zig cache (so zig builds musl for each
arch); each *warm* run uses a fresh store again but the download cache and zig cache the cold run
left (what ``doit check`` shares), so it fetches, compiles, packs and writes everything again
without musl builds. A *no-op* run follows on the warm store.
"""

from __future__ import annotations

import shutil
import textwrap
from typing import TYPE_CHECKING, Final

from harness import CommandFailed, Sample, Series, progress, run
from report import Row

if TYPE_CHECKING:
    from pathlib import Path

    from options import Options

FALLBACK_TOML: Final = """\
    [eif]
    name = "hello"
    version = "0.1.0"
    arch = ["x86_64", "aarch64"]
    recipes = ["recipes/demo.toml"]

    [bootstrap]
    init = { compile = "eifbuild-init" }
    nsm = "none"

    [app]
    files = { "/bin/hello" = { compile = ["examples/hello/hello.c"] } }
    cmd = ["/bin/hello"]
    env = { HELLO_NAME = "Nitro" }
"""
DODO: Final = "from eifbuild.tasks import *  # noqa: F403\n"


def make_project(opts: Options, root: Path) -> str:
    """Copy (or write) the demo project into ``root``; return where its eif.toml came from."""
    root.mkdir(parents=True)
    for name in ("recipes", "examples"):
        shutil.copytree(opts.repo / name, root / name)
    (root / "dodo.py").write_text(DODO)
    own = opts.repo / "eif.toml"
    if own.is_file():
        shutil.copy(own, root / "eif.toml")
        return "the repo's eif.toml"
    (root / "eif.toml").write_text(textwrap.dedent(FALLBACK_TOML))
    return "an eif.toml like the README's (the repo has none yet)"


def _ran(sample: Sample) -> set[str]:
    return {line[3:].strip() for line in sample.stdout.splitlines() if line.startswith(".  ")}


def rows(opts: Options) -> list[Row]:
    project = opts.work / "demo"
    origin = make_project(opts, project)
    caches = opts.work / "demo-caches"
    series = {name: Series(f"doit eif, {name}") for name in ("cold", "warm", "no-op")}

    def build(name: str, store: Path, shared: Path) -> Sample:
        if name != "no-op":
            shutil.rmtree(project / "build", ignore_errors=True)
        env = opts.env(
            {
                "EIFBUILD_CACHE": str(store),
                "EIFBUILD_ZIG_CACHE": str(shared / "zig"),
                "EIFBUILD_SOURCES_DIR": str(shared / "sources"),
            }
        )
        sample = run([opts.python, "-m", "doit", "eif"], cwd=project, env=env, capture=True)
        if name == "no-op" and _ran(sample):
            msg = f"the demo no-op ran {sorted(_ran(sample))}"
            raise CommandFailed(msg)
        return sample

    progress(f"demo ({origin}): {opts.demo_repeat} cold, warm and no-op builds")
    for i in range(opts.demo_repeat):
        shutil.rmtree(caches, ignore_errors=True)
        shared = caches / "shared"
        progress(f"demo: cold build {i + 1}")
        series["cold"].samples.append(build("cold", caches / "store-cold", shared))
        progress(f"demo: warm build {i + 1}")
        series["warm"].samples.append(build("warm", caches / "store-warm", shared))
        series["no-op"].samples.append(build("no-op", caches / "store-warm", shared))
    shutil.rmtree(caches, ignore_errors=True)
    cold, warm, noop = series.values()
    group = "demo build"
    ran = ", ".join(sorted(_ran(cold.samples[0])))
    return [
        Row(group, cold, note=f"{origin}; ran: {ran}"),
        Row(group, warm, baseline=cold, note="download and zig caches kept, fresh store"),
        Row(group, noop, baseline=cold),
    ]
