"""The package's face: ``greenprobe/__init__.py`` only re-exports, and no module of the package
imports from it (an arrow back up makes import order matter and hides cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import greenprobe

PACKAGE = Path(greenprobe.__file__).resolve().parent


def _imports_of_the_package_root(path: Path) -> list[str]:
    """The imports in path that resolve to greenprobe/__init__.py itself."""
    rel = path.relative_to(PACKAGE)
    depth = len(rel.parts) - 1  # folders between the package root and the module
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            root = (node.level == depth + 1 and node.module is None) or (node.level == 0 and node.module == "greenprobe")
            if root and any(a.name != "_core" for a in node.names):
                found.append(f"{rel}:{node.lineno}: from {'.' * node.level}{node.module or ''} import "
                             + ", ".join(a.name for a in node.names))
        elif isinstance(node, ast.Import) and any(a.name == "greenprobe" for a in node.names):
            found.append(f"{rel}:{node.lineno}: import greenprobe")
    return found


def test_no_module_imports_from_the_package_root():
    found = [f for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py" or p.parent != PACKAGE
             for f in _imports_of_the_package_root(p)
             if not p.is_relative_to(PACKAGE / "v1")]
    assert not found, "import from the module that defines it, not from greenprobe/__init__.py:\n" + "\n".join(found)


def test_the_package_root_only_re_exports():
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    defined = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))
               and n.name != "missing" and n.name != "_needs_core"]
    assert not defined, f"greenprobe/__init__.py defines {defined}: define them in a module and re-export"
    assert greenprobe.__version__ == __import__("greenprobe._version", fromlist=["x"]).__version__


def test_each_command_is_a_module_with_add_parser_and_run():
    from greenprobe import cli

    names = set()
    for module in cli.COMMANDS:
        assert callable(module.add_parser) and callable(module.run), module.__name__
        names.add(module.__name__.rsplit(".", 1)[1].replace("_", "-"))
    assert names == {"sensors", "runtimes", "record", "study", "report", "daemon", "setup-perf", "measure", "top"}


def test_the_daemons_limit_flags_are_the_limits_dataclass():
    """One copy of each limit's default: the flags are made from Limits, and parse back to it."""
    import argparse
    from dataclasses import fields

    from greenprobe.cli.daemon import add_limit_flags
    from greenprobe.daemon.limits import Limits

    p = argparse.ArgumentParser()
    add_limit_flags(p)
    args = p.parse_args([])
    assert Limits.from_args(args) == Limits()
    flagged = {f.name for f in Limits.flags()}
    assert flagged == {a.dest for a in p._actions if a.dest.startswith("max_")}
    assert {f.name for f in fields(Limits)} - flagged == {"max_heavy", "max_intake", "max_intake_per_user", "workers"}
    assert Limits.from_args(p.parse_args(["--max-marks", "7", "--max-mark-bytes", "2G"])).max_mark_bytes == 2 << 30
