"""The package layout's import rules, checked on the source (an AST walk, nothing is imported).

envs is the world and knows nothing of models; policies are models and know nothing of worlds;
viz draws given a model and a world and never loads runs. Relative imports are resolved against
the importing module, and imports inside functions count too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "policies", "training", "viz")
FORBIDDEN = {
    "envs": {"policies", "training", "viz"},
    "policies": {"envs", "training", "viz"},
    "viz": {"training"},
}


def imported_packages(path: Path, root: Path = ROOT) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in ``path`` that names one of PACKAGES."""
    package = path.relative_to(root).parts[:-1]  # e.g. ("viz",)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb from the importing module's package
                base = list(package[: len(package) - node.level + 1])
                tails = [node.module] if node.module else [alias.name for alias in node.names]
                names = [".".join([*base, tail]) for tail in tails]
            else:
                names = [node.module or ""]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in PACKAGES}
    return found


def test_every_package_exists():
    for pkg in PACKAGES:
        assert (ROOT / pkg / "__init__.py").is_file(), pkg


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package):
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for target, line in sorted(imported_packages(path))
        if target in FORBIDDEN[package]
    ]
    assert not bad, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(bad)


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    (tmp_path / "viz").mkdir()
    src = tmp_path / "viz" / "m.py"
    src.write_text("def f():\n    from training import fit\n\nfrom . import overlay\nfrom .. import envs\n")
    assert imported_packages(src, tmp_path) == {("training", 2), ("viz", 4), ("envs", 5)}
