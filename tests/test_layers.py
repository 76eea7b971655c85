"""The layers hold: plan decides, run executes, ui presents through the public API only."""
from __future__ import annotations

import ast
from pathlib import Path

import mirror

PACKAGE = Path(mirror.__file__).parent
PUBLIC = {"mirror", "mirror.events", "mirror.model", "mirror.options", "mirror.report", "mirror.errors", "mirror.core",
          "mirror.remote"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions, as absolute names."""
    module = "mirror." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
    return found


def layer(name: str) -> list[tuple[str, set[str]]]:
    return [(str(path.relative_to(PACKAGE)), imports_of(path)) for path in sorted((PACKAGE / name).glob("*.py"))]


def test_plan_neither_writes_nor_presents():
    for path, imported in layer("plan"):
        bad = {name for name in imported if name.startswith(("mirror.run", "mirror.ui", "multiprocessing",
                                                             "tqdm", "typer"))}
        assert not bad, f"{path} imports {bad}"


def test_run_knows_nothing_of_terminals():
    for path, imported in layer("run"):
        bad = {name for name in imported if name.startswith(("mirror.ui", "tqdm", "typer"))}
        assert not bad, f"{path} imports {bad}"


def test_ui_uses_the_public_api_only():
    for path, imported in layer("ui"):
        inner = {name for name in imported if name.startswith("mirror") and not name.startswith("mirror.ui")}
        assert inner <= PUBLIC, f"{path} imports {inner - PUBLIC}"


def test_the_public_names_are_there():
    for name in mirror.__all__:
        assert getattr(mirror, name) is not None
