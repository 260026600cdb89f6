"""The tree reads as the architecture: no import cycles, the core never imports a feature package
at module level, the wheel ships every module, and the pure-NumPy tests need neither gguf nor llama.cpp."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "edge_specens"
FEATURES = ("auto", "server", "bench", "cli")


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _module_level_imports(name: str, path: Path) -> set[str]:
    """edge_specens modules imported at module level (not inside functions: those are lazy)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("edge_specens"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports module x
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edge_specens"))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for imp in _module_level_imports(name, path):
            # importing a.b.c runs a and a.b too
            parts = imp.split(".")
            deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in mods)
        deps.discard(name)
        graph[name] = deps
    return graph


def test_no_import_cycles_between_modules():
    graph = _graph()
    # a package's __init__ importing its own submodules is how packages work; a cycle is anything else
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for dep in graph[node]:
            if node.startswith(dep + "."):  # a submodule importing its own package: runs the __init__ first
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for n in graph:
        if n not in state:
            visit(n, [])
    assert not cycles, cycles


def test_the_core_never_imports_a_feature_package_at_module_level():
    graph = _graph()
    core = [
        m
        for m in graph
        if m != "edge_specens.__main__"  # `python -m edge_specens` is the CLI's entry point
        and not any(m.startswith(f"edge_specens.{f}") for f in FEATURES)
    ]
    assert "edge_specens.decode.state" in core and "edge_specens.ensemble" in core
    bad = {m: sorted(d for d in graph[m] if any(d.startswith(f"edge_specens.{f}") for f in FEATURES)) for m in core}
    assert not {m: d for m, d in bad.items() if d}


@pytest.mark.slow
def test_the_wheel_ships_and_imports_every_module(tmp_path):
    """Packages are discovered: a new package can never be missing from the wheel."""
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("edge_specens-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")}
    assert want <= names, sorted(want - names)
    assert "edge_specens/py.typed" in names
    assert {f"edge_specens/models/{p.name}" for p in (ROOT / "models").glob("*.toml")} <= names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import importlib, pkgutil, edge_specens as e\n"
        f"assert e.__file__.startswith({str(site)!r}), e.__file__\n"
        "mods = [m.name for m in pkgutil.walk_packages(e.__path__, 'edge_specens.')]\n"
        "mods.remove('edge_specens.__main__')  # importing it runs the CLI\n"
        "[importlib.import_module(m) for m in mods]\n"
        "from edge_specens.presets import list_presets\n"
        "assert 'qwen2.5-coder-duo' in list_presets()\n"
        "print(len(mods), e.__version__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    n, version = r.stdout.split()
    assert int(n) == len(want) - 2  # every module but the root package and __main__
    assert version == __import__("edge_specens").__version__


PURE_NUMPY_TESTS = ["tests/test_verify.py", "tests/test_strategies_fake.py", "tests/test_options.py"]


@pytest.mark.slow
def test_pure_numpy_tests_need_neither_gguf_nor_llama_cpp():
    """The strategy and verification tests run on fake members: with gguf and llama_cpp made
    unimportable they still pass."""
    code = (
        "import sys\n"
        "sys.modules['gguf'] = None\n"
        "sys.modules['llama_cpp'] = None\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', *sys.argv[1:]]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, *PURE_NUMPY_TESTS], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout
