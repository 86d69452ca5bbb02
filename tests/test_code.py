"""The code itself: lint-clean, type-checked, and its modules depend on each other one way only."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "embedkit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> set:
    """The embedkit modules a file imports, at its top or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("embedkit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("embedkit"):
                target = node.module
            else:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}")}
            found |= submodules
            if len(submodules) < len(node.names):  # names the package itself defines
                found.add(target)
    return found - {name}


def test_no_import_cycles():
    """Not even through imports inside functions: dependencies run one way (CLI and the Datasette
    plugin -> library -> storage), so every module can be read and tested from the bottom up."""
    modules = {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}
    graph = {module: {target for target in targets if target in modules} for module, targets in modules.items()}
    cycles = []

    def visit(module, path, seen):
        for target in sorted(graph[module]):
            if target in path:
                cycle = path[path.index(target):] + [target]
                if sorted(cycle[:-1]) not in [sorted(c[:-1]) for c in cycles]:
                    cycles.append(cycle)
            elif target not in seen:
                seen.add(target)
                visit(target, path + [target], seen)

    for module in sorted(graph):
        visit(module, [module], {module})
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.slow
def test_ruff_is_clean():
    ruff = shutil.which("ruff") or pytest.fail("ruff is not installed: pip install -e '.[test]'")
    result = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_package_type_checks():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
