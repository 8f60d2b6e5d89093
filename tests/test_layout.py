"""The code's shape (issue #12): subpackages by concern, each with a lazy public face, small
modules, and no import cycle. Every import counts, also those under TYPE_CHECKING and inside
functions: a cycle there is still two modules that cannot be understood apart."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "eifbuild"
SUBPACKAGES = (
    "eif", "ramdisk", "inspect", "sources", "oci", "toolchain", "store", "plan", "runtime", "attestation",
    "provenance",
)  # fmt: skip
PRIVATE = ("util",)  # helpers any package may use directly; no public face
MAX_LINES = 600
MAX_ROOT_MODULES = 16


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """Every eifbuild module that ``name`` imports, wherever the import statement is."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    here = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "eifbuild")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                origin = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").split(".")[0] == "eifbuild":
                origin = str(node.module)
            else:
                continue
            for alias in node.names:
                # `from . import log` imports the module eifbuild.log; `from .x import Y` imports x
                found.add(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin)
    return found & MODULES.keys()


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), by Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by concern"


def test_few_modules_at_the_root() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


FACES = (*SUBPACKAGES, "store.remote", "runtime.vsock")


def _type_checking_imports(init_file: Path) -> dict[str, str]:
    """``{name: ".module"}`` of the ``from .module import name`` statements under the top-level
    ``if TYPE_CHECKING:`` of a face (what type checkers see of it)."""
    found: dict[str, str] = {}
    for node in ast.parse(init_file.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom), ast.unparse(stmt)
                assert stmt.level == 1, ast.unparse(stmt)
                found.update({alias.asname or alias.name: f".{stmt.module}" for alias in stmt.names})
    return found


@pytest.mark.parametrize("sub", FACES)
def test_each_package_has_a_lazy_face_that_type_checkers_see_too(sub: str) -> None:
    face = importlib.import_module(f"eifbuild.{sub}")
    exported = set(face.__all__)
    assert exported, f"eifbuild.{sub} exports nothing"
    assert set(dir(face)) == exported == set(face.EXPORTS)
    assert _type_checking_imports(MODULES[f"eifbuild.{sub}"]) == face.EXPORTS
    for name in sorted(exported):
        assert getattr(face, name) is not None, name
    with pytest.raises(AttributeError, match="has no attribute 'not_exported'"):
        _ = face.not_exported


@pytest.mark.parametrize("sub", FACES)
def test_no_face_exports_a_name_its_submodules_take(sub: str) -> None:
    """Importing a submodule sets it as an attribute of its package, hiding a name of the face."""
    face = importlib.import_module(f"eifbuild.{sub}")
    here = MODULES[f"eifbuild.{sub}"].parent
    submodules = {p.stem for p in here.glob("*.py")} | {p.parent.name for p in here.glob("*/__init__.py")}
    assert set(face.__all__).isdisjoint(submodules)


@pytest.mark.parametrize("sub", FACES)
def test_modules_the_face_takes_nothing_from_are_private(sub: str) -> None:
    """A module no other package uses is named ``_module``; one the face exports from is not."""
    face = importlib.import_module(f"eifbuild.{sub}")
    here = MODULES[f"eifbuild.{sub}"].parent
    modules = {p.stem for p in here.glob("*.py")} - {"__init__"}
    used = {module.lstrip(".") for module in face.EXPORTS.values()}
    assert {m for m in modules if not m.startswith("_")} - used == set(), "rename these with a leading _"
    assert {m for m in used if m.startswith("_")} == set(), "the face exports from these: drop the _"


def test_importing_the_faces_imports_none_of_their_modules() -> None:
    faces = "; ".join(f"import eifbuild.{sub}" for sub in FACES)
    script = f"import sys; {faces}; print(' '.join(m for m in sys.modules if m.startswith('eifbuild.')))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    faces_and_helper = {f"eifbuild.{sub}" for sub in FACES} | {"eifbuild.util", "eifbuild.util.lazy"}
    assert set(result.stdout.split()) - faces_and_helper == set()


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_package(module)) else None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_packages_use_each_others_faces_not_their_private_modules(name: str) -> None:
    mine = _package_of(name)
    reached_into = sorted(
        target
        for target in GRAPH[name]
        if (theirs := _package_of(target)) in SUBPACKAGES
        and theirs != mine
        and not _is_package(target)  # a package's face, or a subpackage's (store.remote, runtime.vsock)
    )
    assert reached_into == [], f"{name} should import these from their package's face"


def test_the_wheel_ships_every_package() -> None:
    """pyproject.toml lists the packages by hand (recipes/ and examples/ join them as package data)."""
    from eifbuild.util.tomlfile import read_toml  # noqa: PLC0415

    listed = set(read_toml(PACKAGE.parent / "pyproject.toml", "pyproject")["tool"]["setuptools"]["packages"])
    present = {_module_name(init) for init in PACKAGE.rglob("__init__.py")}
    assert present <= listed, sorted(present - listed)


def test_the_version_is_written_once() -> None:
    """eifbuild/__init__.py holds the version; pyproject.toml reads it from there."""
    import importlib.metadata  # noqa: PLC0415

    import eifbuild  # noqa: PLC0415
    from eifbuild.util.tomlfile import read_toml  # noqa: PLC0415

    pyproject = read_toml(PACKAGE.parent / "pyproject.toml", "pyproject")
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "eifbuild.__version__"}
    assert importlib.metadata.version("eifbuild") == eifbuild.__version__
