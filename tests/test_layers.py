"""Layers point one way: the core (``cmrbench/*.py``) imports no builder, baseline or leaderboard module; only the
command line reaches them. A router author can then depend on the core alone."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "cmrbench"
OUTER = ("builders", "baselines", "leaderboard")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            found.add(module if node.level == 0 else "cmrbench." + module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_the_core_imports_no_outer_package():
    offending = {path.name: sorted(m for m in _imports(path)
                                   if m.split(".")[:2] in [["cmrbench", o] for o in OUTER] or m.split(".")[0] in OUTER)
                 for path in sorted(CORE.glob("*.py")) if path.name != "cli.py"}
    assert not {k: v for k, v in offending.items() if v}
