"""The report's generative section (``task = "generate"``): tables per batch size and precision in
the paper's shape, bars of J per output token and J per prompt token with their intervals, J per
output token against context length, energy against time with Spearman's rho, and two findings
held against the data, each with a verdict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..parquet import read_table
from .figures import png
from .layout import DAMAGED_FIX, Layout
from .page import image, render, table, text
from .stats import spearman, welch_ratio

LABEL = {"torch": "PyTorch (transformers)", "onnxruntime-genai": "ORT GenAI", "llama.cpp": "llama.cpp",
         "ctranslate2": "CTranslate2", "vllm": "vLLM"}
ORDER = ("torch", "onnxruntime-genai", "llama.cpp", "ctranslate2", "vllm")
QUANTISED = ("int8", "q8_0", "q4_k_m", "int4")
POT, PPT = "energy_j_per_output_token", "energy_j_per_prompt_token"

DEFINITIONS = text(
    "<h3>What the figures are</h3><p>A request is <i>batch</i> sequences generated together, the prompt's "
    "prefill and then one decode step per further token, EOS ignored. Each run's energy above idle is split "
    "between the phases (the study's back-to-back rule): each prefill's own energy, estimated from every "
    "counter update the prefills overlap, goes to the prompt tokens; the rest, the decode steps and whatever "
    "follows a request's last step before the next starts, to the output tokens. Gross adds idle power over "
    "the phase's own time. J per request: one sequence's prompt and output. Intervals: 95 % over the runs "
    "the table counts (Cox's log-normal interval: gross figures never below zero). "
    "Definitions: docs/SCHEMA.md, \"Generation\".</p>")


def runtime_label(r: dict) -> str:
    """The runtime's name, with its device where it is not the CPU."""
    device = r.get("provider") or "cpu"
    return LABEL.get(r["runtime"], r["runtime"]) + ("" if device == "cpu" else f" ({device})")


def label(r: dict) -> str:
    return f"{runtime_label(r)} {r.get('precision', '')}"


def _fmt(r: dict, key: str, scale: float = 1.0) -> str:
    v, lo, hi = r.get(key), r.get(key + "_low"), r.get(key + "_high")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v * scale:.4g} [{lo * scale:.4g}, {hi * scale:.4g}]"


def _order(r: dict) -> tuple:
    rt = ORDER.index(r["runtime"]) if r["runtime"] in ORDER else len(ORDER)
    return (r["model"], rt, r.get("precision", ""))


def tables(ok: list[dict]) -> list:
    """One table per (batch size, precision), rows model x runtime, in the paper's shape."""
    parts = []
    for b in sorted({r["batch_size"] for r in ok}):
        for p in sorted({r["precision"] for r in ok if r["batch_size"] == b}):
            rows = sorted([r for r in ok if r["batch_size"] == b and r["precision"] == p], key=_order)
            parts.append(render("<h3>Batch {{ b }}, {{ p }}</h3>", b=b, p=p) + table(
                ["model", "runtime", "runs", "J per output token", "J per prompt token", "J per request", "TTFT (ms)",
                 "TPOT (ms)", "output tokens/s", "note"],
                [[r["model"], runtime_label(r), str(r.get("runs", "-")), _fmt(r, POT), _fmt(r, PPT),
                  _fmt(r, "energy_j_per_request"), _fmt(r, "ttft_s", 1e3), _fmt(r, "tpot_s", 1e3),
                  _fmt(r, "output_tokens_per_s"),
                  ("ESTIMATED " if r.get("estimated") else "") + (r.get("prefill_reason") or "")] for r in rows]))
    return parts


def run_values(out: Path, row: dict, key: str) -> list[float]:
    t = read_table(Layout(out).runs_table(row["id"]), fix=DAMAGED_FIX)
    return [v for v in t.column(key).to_pylist() if v is not None and math.isfinite(v)] if key in t.column_names else []


def findings(out: Path, ok: list[dict]) -> list[dict]:
    """The two generative findings, each with its verdict and the test behind it."""
    measured = [r for r in ok if not r.get("estimated") and r.get(POT) is not None and math.isfinite(r[POT])]
    rows = []
    # 1. the paper's ranking: energy tracks time, and PyTorch is best on its language model
    f = {"finding": "the paper's ranking holds for generation",
         "paper": "energy tracks time (rho 0.99); PyTorch best on the language model (BERT)",
         "test": "Spearman's rho of J per output token against TPOT over configurations; per (model, batch, "
                 "precision), PyTorch against each other runtime by Welch's t on the runs' log J per output token"}
    if len({r["runtime"] for r in measured}) < 2:
        f.update(verdict="cannot test", detail="fewer than 2 runtimes measured" +
                 (" (every energy figure here is ESTIMATED)" if ok and not measured else ""))
    else:
        rho, p = spearman([r["tpot_s"] for r in measured], [r[POT] for r in measured])
        verdicts, details = [], [f"rho {rho:.3f} (p {p:.2g}, {len(measured)} configurations)"]
        for r in measured:
            if r["runtime"] == "torch":
                continue
            base = next((x for x in measured if x["runtime"] == "torch" and x["model"] == r["model"]
                         and x["batch_size"] == r["batch_size"] and x["precision"] == r["precision"]), None)
            if base is None:
                continue
            ratio, lo, hi, sig = welch_ratio(run_values(out, base, POT), run_values(out, r, POT))
            verdicts.append("reproduced" if sig and ratio > 1 else "not reproduced" if sig else "inconclusive")
            details.append(f"{r['id']} / torch: x{ratio:.3g} [{lo:.3g}, {hi:.3g}]")
        ranked = "reproduced" if verdicts and all(v == "reproduced" for v in verdicts) else \
            "not reproduced" if "not reproduced" in verdicts else "inconclusive" if verdicts else "cannot test"
        tracks = rho >= 0.9 and p < 0.05
        f.update(verdict=ranked if tracks or ranked == "not reproduced" else
                 ("not reproduced" if math.isfinite(rho) else ranked), detail="; ".join(details))
    rows.append(f)
    # 2. quantisation: energy per token in proportion to time <=> the same mean power
    f = {"finding": "quantisation saves energy per token in proportion to time",
         "paper": "(not in the paper: asked of generation)",
         "test": "per runtime, model and batch: the quantised precision against fp32, the ratio of J per output "
                 "token beside the ratio of TPOT; in proportion when the runs' power (J per output token / TPOT) "
                 "does not differ significantly (Welch's t on its logarithm)"}
    verdicts, details = [], []
    for q in [r for r in measured if r["precision"] in QUANTISED]:
        base = next((x for x in measured if x["runtime"] == q["runtime"] and x["model"] == q["model"]
                     and x["batch_size"] == q["batch_size"] and x["precision"] == "fp32"), None)
        if base is None:
            continue
        pw = [e / t for e, t in zip(run_values(out, q, POT), run_values(out, q, "tpot_s"))]
        pb = [e / t for e, t in zip(run_values(out, base, POT), run_values(out, base, "tpot_s"))]
        ratio, lo, hi, sig = welch_ratio(pb, pw)
        e_ratio, t_ratio = q[POT] / base[POT], q["tpot_s"] / base["tpot_s"]
        verdicts.append("in proportion" if not sig else "saves more than time" if ratio < 1 else "saves less than time")
        details.append(f"{q['id']}: energy x{e_ratio:.3g}, time x{t_ratio:.3g}, power x{ratio:.3g} [{lo:.3g}, {hi:.3g}]")
    if not verdicts:
        f.update(verdict="cannot test", detail="no quantised configuration measured beside its fp32 one")
    else:
        f.update(verdict=verdicts[0] if len(set(verdicts)) == 1 else "mixed: " + ", ".join(sorted(set(verdicts))),
                 detail="; ".join(details))
    rows.append(f)
    return rows


def context_curves(out: Path, row: dict) -> tuple[list[float], list[float]]:
    """Mean context and net J per output token per context bin over the runs (total domains)."""
    runs = [json.loads(p.read_text()) for p in Layout(out).run_rows(row["id"])]
    tops = [d for d in (row.get("total_domains") or "").split(",") if d]
    by_bin: dict = {}
    for r in runs:
        for bn in r.get("decode_bins", []):
            vals = [bn.get(f"energy_j_per_step[{d}]") for d in tops]
            if not tops or any(v is None for v in vals) or bn.get("time_s_per_step") is None:
                continue
            e = sum(vals) - row["idle_power_w"] * bn["time_s_per_step"]
            by_bin.setdefault(bn["bin"], []).append((bn["context_tokens"], e / row["batch_size"]))
    pts = [(np.mean([c for c, _ in v]), np.mean([e for _, e in v])) for _, v in sorted(by_bin.items())]
    return [p[0] for p in pts], [p[1] for p in pts]


def plots(out: Path, ok: list[dict]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    made = {}
    models = sorted({r["model"] for r in ok})
    batches = sorted({r["batch_size"] for r in ok})
    est = " - energy ESTIMATED (no sensor)" if any(r.get("estimated") for r in ok) else ""
    for key, name, unit in ((POT, Layout.plot_file("gen_output_token"), "J per output token"),
                            (PPT, Layout.plot_file("gen_prompt_token"), "J per prompt token")):
        fig, axes = plt.subplots(len(batches), len(models), figsize=(4.6 * len(models), 3.6 * len(batches)),
                                 squeeze=False)
        for i, b in enumerate(batches):
            for j, m in enumerate(models):
                ax = axes[i][j]
                rows = sorted([r for r in ok if r["model"] == m and r["batch_size"] == b
                               and r.get(key) is not None and math.isfinite(r[key])], key=_order)
                y = [r[key] for r in rows]
                err = [[max(r[key] - r[key + "_low"], 0) for r in rows], [max(r[key + "_high"] - r[key], 0) for r in rows]]
                ax.bar(range(len(rows)), y, yerr=err, capsize=3,
                       color=["#dd8452" if r["precision"] in QUANTISED else "#4c72b0" for r in rows])
                ax.set_xticks(range(len(rows)))
                ax.set_xticklabels([label(r) for r in rows], rotation=35, ha="right", fontsize=8)
                ax.set_title(f"{m}, batch {b}", fontsize=10)
                ax.set_ylabel(unit, fontsize=9)
        fig.suptitle(f"{unit} (95 % intervals; blue full precision, orange quantised){est}")
        fig.tight_layout()
        made[name] = png(fig)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for r in sorted(ok, key=_order):
        x, y = context_curves(out, r)
        if len(x) >= 2:
            ax.plot(x, y, marker="o", label=r["id"])
    ax.set_xlabel("context length at the decode step (tokens)")
    ax.set_ylabel("net J per output token")
    ax.set_title(f"J per output token against context length{est}", fontsize=10)
    if ax.lines:
        ax.legend(fontsize=6)
    fig.tight_layout()
    made[Layout.plot_file("gen_context")] = png(fig)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    pts = [r for r in ok if r.get(POT) is not None and math.isfinite(r[POT]) and r[POT] > 0]
    for m in models:
        rows = [r for r in pts if r["model"] == m]
        ax.scatter([r["tpot_s"] for r in rows], [r[POT] for r in rows], label=m)
    rho, _ = spearman([r["tpot_s"] for r in pts], [r[POT] for r in pts])
    if pts:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("time per output token (s)")
    ax.set_ylabel("J per output token")
    ax.set_title(f"Energy against time (Spearman rho = {rho:.3f}){est}", fontsize=10)
    fig.tight_layout()
    made[Layout.plot_file("gen_energy_vs_time")] = png(fig)
    plt.close(fig)
    for name, data in made.items():
        (out / name).write_bytes(data)
    return made


def section(out: Path) -> list:
    """The generative section's HTML parts (page.py's markup) for the study in ``out`` (task generate)."""
    rows = read_table(Layout(out).summary, ("id", "status"), DAMAGED_FIX).to_pylist()
    spec = json.loads(Layout(out).spec.read_text()) if Layout(out).spec.exists() else {}
    ok = [r for r in rows if r["status"] == "ok"]
    parts = [text("<h2>Generative inference: energy per token, phase by phase</h2>"),
             render("<p>Prompts of {{ spec.get('prompt_tokens') }} tokens, {{ spec.get('output_tokens') }} output "
                    "tokens per sequence (EOS ignored), models of size {{ spec.get('size') }} with random weights, "
                    "{{ spec.get('runs') }} runs per configuration; every prefill and decode step marked by its "
                    "runtime's worker.</p>", spec=spec), DEFINITIONS]
    if spec.get("profile") == "quick":
        parts.append(text("<p class='warn'>Quick profile: short prompts and outputs, the smallest models, few short "
                          "runs. It exercises the runtimes; its figures are not conclusions about them.</p>"))
    if any(r.get("estimated") for r in ok):
        parts.append(text("<p class='warn'>Some energy figures are <b>ESTIMATED</b> (no energy sensor: a CPU model), "
                          "not measured.</p>"))
    parts += tables(ok)
    if ok:
        pts = [r for r in ok if r.get(POT) is not None and math.isfinite(r[POT])]
        rho, p = spearman([r["tpot_s"] for r in pts], [r[POT] for r in pts])
        parts.append(render("<h3>Energy against time</h3><p>Spearman's rho of J per output token against time per "
                            "output token over {{ n }} configurations: <b>{{ rho }}</b> (p {{ p }}).</p>",
                            n=len(pts), rho=f"{rho:.3f}", p=f"{p:.2g}"))
        parts.append(text("<h3>Findings, held against this data</h3>") + table(
            ["finding", "paper", "here", "test", "detail (95 % intervals)"],
            [[f["finding"], f["paper"], f["verdict"], f["test"], f["detail"]] for f in findings(out, ok)]))
        parts.append(text("<h3>Slope against context</h3>") + table(
            ["configuration", "J per output token per 1,000 tokens of context (95 %)"],
            [[r["id"], _fmt(r, "energy_j_per_output_token_per_1k_context")] for r in sorted(ok, key=_order)]))
        parts += [image(name, data) for name, data in plots(out, ok).items()]
    other = [r for r in rows if r["status"] != "ok"]
    if other:
        parts.append(text("<h3>Not measured</h3>") + table(["configuration", "status", "why", "fix"], [
            [r.get("id"), r["status"], (r.get("error") or r.get("reason") or "")[:300], (r.get("fix") or "")[:200]]
            for r in other]))
    return parts
