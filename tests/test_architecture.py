"""The layering rules, checked on the source (CI also runs `lint-imports`, ruff and mypy; see .ci/run).

- `bot` → `playbooks` → `feedback` → `knowledge`, plus the kernel `bot.core` that all may import;
- no import of the project's own modules inside a function or under `if TYPE_CHECKING:` (the way cycles
  used to be hidden), except two documented places that import by name: the web process's plugin point and the
  ``deskmate`` script's entry (bot/console.py);
- SQL on the tables stays in `feedback/` and `playbooks/`; chat adapters do not touch the database.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("knowledge", "feedback", "playbooks", "bot")
RANK = {name: rank for rank, name in enumerate(PACKAGES)}
ADAPTERS = ("bot/slack", "bot/teams", "bot/local_chat")


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "migrations" not in p.parts)


def project_imports(tree: ast.AST) -> list[tuple[ast.stmt, str, str]]:
    """(statement, imported module, where): where is "top", "function" or "type_checking"."""
    found: list[tuple[ast.stmt, str, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = "function"
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = "type_checking"
            if isinstance(child, ast.Import):
                found.extend((child, alias.name, inner) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child, child.module, inner))
            visit(child, inner)

    visit(tree, "top")
    return [(stmt, name, where) for stmt, name, where in found if name.split(".")[0] in PACKAGES]


def layer_of(module: str) -> str:
    return "kernel" if module == "bot.core" or module.startswith("bot.core.") else module.split(".")[0]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    importer = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = []
    for stmt, imported, where in project_imports(tree):
        if where != "top":
            problems.append(f"line {stmt.lineno}: {imported} imported inside a {where.replace('_', ' ')} block")
        source, target = layer_of(importer), layer_of(imported)
        if target == "kernel":
            continue
        if source == "kernel":
            problems.append(f"line {stmt.lineno}: the kernel imports {imported}")
        elif RANK[target] > RANK[source]:
            problems.append(f"line {stmt.lineno}: {source} may not import {imported} (an upper layer)")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [p for p in modules() if str(p.relative_to(ROOT)).startswith(ADAPTERS)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_adapters_do_not_touch_the_database(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    offending = sorted(m for m in imported if m.split(".")[0] in ("sqlmodel", "sqlalchemy") or m == "feedback.models")
    assert not offending, f"adapters translate payloads; the database is reached through bot.intake, " \
                          f"feedback.interactions and feedback.votes, not {offending}"


def test_sql_stays_in_feedback_and_playbooks() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in modules()
                 if p.parts[len(ROOT.parts)] in ("bot", "knowledge") and "select(" in p.read_text(encoding="utf-8")]
    assert not offenders, f"SQL queries belong in feedback/ or playbooks/: {offenders}"
