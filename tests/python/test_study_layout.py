"""A study's folder is described in one place, study/layout.py (``Layout``): no other module of the
study package names a study file or folder itself (a file name literal, or a literal joined onto a
path with ``/``), so that the names on disk cannot drift apart between the code that writes a file
and the code that reads it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from greenprobe.study.layout import Layout

STUDY = Path(__file__).resolve().parents[2] / "python" / "greenprobe" / "study"

#: a file's name in a string: a word of name characters (or glob and Slurm patterns) and an extension
FILE_NAME = re.compile(r"[\w*%.-]+\.(json|parquet|csv|md|png|html|onnx|txt|sh|log)\b")

#: (module, literal) pairs that name no file of the study's folder
ALLOWED = {("execute.py", "daemon.sock"),  # the study's daemon's socket, in a folder of its own under /tmp
           ("gen_report.py", "SCHEMA.md"),  # docs/SCHEMA.md, named in the report's prose
           ("slurm.py", "slurm-local.sh")}  # scripts/slurm-local.sh, named in a fix


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes (prose, not code)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _literals(path: Path) -> list[str]:
    """Where ``path`` names a file or a folder of the study itself: string literals (f-strings' parts
    included) holding a file name, and string literals joined onto a path with ``/``."""
    tree = ast.parse(path.read_text())
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            for m in FILE_NAME.finditer(node.value):
                if (path.name, m.group(0)) not in ALLOWED:
                    found.append(f"{path.name}:{node.lineno}: {m.group(0)!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                literal = isinstance(side, ast.JoinedStr) or (isinstance(side, ast.Constant)
                                                               and isinstance(side.value, str))
                if literal and (path.name, getattr(side, "value", None)) not in ALLOWED:
                    found.append(f"{path.name}:{node.lineno}: / {ast.unparse(side)}")
    return found


def test_only_layout_names_the_studys_files():
    found = [f for p in sorted(STUDY.glob("*.py")) if p.name != "layout.py" for f in _literals(p)]
    assert not found, "name study files and folders through study/layout.py's Layout:\n" + "\n".join(found)


def test_the_scan_sees_a_literal(tmp_path):
    """The scan itself: each kind of literal it is there to catch is caught, docstrings are not."""
    p = tmp_path / "m.py"
    p.write_text('"""writes idle.json"""\n'
                 'def f(here, r):\n'
                 '    """reads runs/rNNNN.json"""\n'
                 '    (here / "idle.json").write_text("")\n'
                 '    here.glob("r*.json")\n'
                 '    return here / "disturbed" / f"r{r:04d}-x.json"\n')
    found = _literals(p)
    assert len([f for f in found if ":4:" in f]) == 2, found  # the name, and the literal joined on
    assert any(":5: 'r*.json'" in f for f in found), found
    assert any("/ 'disturbed'" in f for f in found) and any("'-x.json'" in f for f in found), found
    assert not any(":1:" in f or ":3:" in f for f in found), found


def test_the_names_on_disk(tmp_path):
    """The names the study has always written (docs/SCHEMA.md), through Layout."""
    lay = Layout(tmp_path)
    cfg = lay.config("c1")
    assert lay.run_row("c1", 7) == cfg / "runs" / "r0007.json"
    assert lay.run_inferences("c1", 7) == Layout.run_inferences_in(cfg, 7) == cfg / "runs" / "r0007.parquet"
    assert lay.disturbed_row("c1", 7, "slurm-12-0", 1) == cfg / "disturbed" / "r0007-slurm-12-0-1.json"
    assert Layout.IDLE == "idle.json" and lay.session("0") / Layout.IDLE == tmp_path / "sessions" / "0" / "idle.json"
    assert lay.onnx_export("torch", "bert", "tiny", 64, 32) == tmp_path / "onnx" / "torch-bert-tiny-64-32.onnx"
    assert Layout.onnx_export_tmp(tmp_path / "a.onnx", "h-1") == tmp_path / "a.h-1.tmp.onnx"
    assert Layout.plot_file("energy_vs_time") == "energy_vs_time.png"
    sub = tmp_path / "slurm" / "sub-0"
    assert (Layout.job_script(sub), Layout.task_configs(sub)) == (sub / "job.sh", sub / "configs.txt")
    assert str(Layout.task_log(str(sub), "%A_%a")) == f"{sub}/%A_%a.log"

    (cfg / "runs").mkdir(parents=True)
    for r in (2, 0, 1):
        lay.run_row("c1", r).write_text("{}")
    lay.run_inferences("c1", 0).write_text("")
    assert lay.runs_done("c1") == {0, 1, 2} and [p.name for p in lay.run_rows("c1")] == ["r0000.json", "r0001.json",
                                                                                         "r0002.json"]
    assert Layout.disturbed_rows_in(cfg) == [] and lay.disturbed_rows() == []  # no folder yet
    lay.disturbed_row("c1", 1, "0", 0).parent.mkdir()
    lay.disturbed_row("c1", 1, "0", 0).write_text("{}")
    assert Layout.disturbed_rows_in(cfg) == lay.disturbed_rows() == [cfg / "disturbed" / "r0001-0-0.json"]
