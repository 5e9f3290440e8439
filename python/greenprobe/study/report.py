"""`greenprobe report DIR`: DIR/report.html (self-contained, readable offline) and PNG plots from a
study's summary.parquet: tables in the shape of the paper's, energy and time per configuration,
energy against time with Spearman's rho, native against ONNX Runtime with a significance test."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..parquet import read_table
from .layout import DAMAGED_FIX, Layout
from .figures import png
from .page import image, page, render, table, text
from .stats import spearman, welch


RUNTIME_ORDER = ("torch", "tensorflow", "mxnet", "onnxruntime")
LABEL = {"torch": "PyTorch", "tensorflow": "TensorFlow", "mxnet": "MXNet", "onnxruntime": "ONNX Runtime"}


def config_label(r: dict) -> str:
    if r["runtime"] == "onnxruntime":
        return f"ORT[{LABEL.get(r['source'], r['source'])}, {r['provider']}]"
    return LABEL.get(r["runtime"], r["runtime"])


def make_plots(ok: list[dict], out: Path) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    models = sorted({r["model"] for r in ok})
    batches = sorted({r["batch_size"] for r in ok})
    for metric, unit, name in (("energy_j_per_inference", "J per inference", "energy"),
                               ("time_s_per_inference", "s per inference", "time")):
        fig, axes = plt.subplots(len(batches), len(models), figsize=(4.6 * len(models), 3.6 * len(batches)),
                                 squeeze=False)
        for i, b in enumerate(batches):
            for j, m in enumerate(models):
                ax = axes[i][j]
                rows = sorted([r for r in ok if r["model"] == m and r["batch_size"] == b], key=config_label)
                y = [r[metric] for r in rows]
                err = [[r[metric] - r[metric + "_low"] for r in rows], [r[metric + "_high"] - r[metric] for r in rows]]
                colors = ["#4c72b0" if r["runtime"] != "onnxruntime" else "#dd8452" for r in rows]
                ax.bar(range(len(rows)), y, yerr=err, color=colors, capsize=3)
                ax.set_xticks(range(len(rows)))
                ax.set_xticklabels([config_label(r) for r in rows], rotation=35, ha="right", fontsize=8)
                ax.set_title(f"{m}, batch {b}", fontsize=10)
                ax.set_ylabel(unit, fontsize=9)
        est = " - energy ESTIMATED (no sensor)" if name == "energy" and any(r.get("estimated") for r in ok) else ""
        fig.suptitle(f"{name.capitalize()} per inference (95 % intervals; blue native, orange ONNX Runtime){est}")
        fig.tight_layout()
        plots[Layout.plot_file(name)] = png(fig)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m in models:
        rows = [r for r in ok if r["model"] == m]
        ax.scatter([r["time_s_per_inference"] for r in rows], [r["energy_j_per_inference"] for r in rows], label=m)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time per inference (s)")
    ax.set_ylabel("energy per inference (J)")
    rho, _ = spearman([r["time_s_per_inference"] for r in ok], [r["energy_j_per_inference"] for r in ok])
    est = "\nenergy ESTIMATED (no sensor)" if any(r.get("estimated") for r in ok) else ""
    ax.set_title(f"Energy against time, every configuration (Spearman rho = {rho:.3f}){est}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plots[Layout.plot_file("energy_vs_time")] = png(fig)
    plt.close(fig)
    for name, data in plots.items():
        (out / name).write_bytes(data)
    return plots


def _fmt(v: float, low: float, high: float, scale: float = 1.0, digits: int = 4) -> str:
    return f"{v * scale:.{digits}g} [{low * scale:.{digits}g}, {high * scale:.{digits}g}]"


def _versus(base: dict, other: dict, out: Path, cells: list) -> list:
    """``cells`` + for energy and time: ratio other/base, difference other - base with its Welch
    95 % interval over the runs, and whether it is significant."""
    runs_b = read_table(Layout(out).runs_table(base["id"]), RUN_COLUMNS, DAMAGED_FIX).to_pydict()
    runs_o = read_table(Layout(out).runs_table(other["id"]), RUN_COLUMNS, DAMAGED_FIX).to_pydict()
    for key in ("energy_j_per_inference", "time_s_per_inference"):
        d, lo, hi, sig = welch(runs_b[key], runs_o[key])
        ratio = other[key] / base[key] if base[key] else float("nan")
        cells += [f"{ratio:.3g}x", f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]", "yes" if sig else "no"]
    return cells


def native_vs_onnx(ok: list[dict], out: Path) -> list[list]:
    """Per (framework, model, batch): native against ONNX Runtime (every provider) on the per-run
    energy and time, Welch 95 % interval of the difference."""
    rows = []
    for r in ok:
        if r["runtime"] != "onnxruntime":
            continue
        native = next((n for n in ok if n["runtime"] == r["source"] and n["model"] == r["model"]
                       and n["batch_size"] == r["batch_size"]), None)
        if native is not None:
            rows.append(_versus(native, r, out, [LABEL[r["source"]], r["provider"], r["model"], r["batch_size"]]))
    return rows


def provider_vs_provider(ok: list[dict], out: Path) -> list[list]:
    """Per (source, model, batch): every other ONNX Runtime provider against the CPU provider, on
    per-run energy and time, Welch 95 % interval of the difference."""
    rows = []
    for r in ok:
        if r["runtime"] != "onnxruntime" or r["provider"] == "cpu":
            continue
        cpu = next((c for c in ok if c["runtime"] == "onnxruntime" and c["provider"] == "cpu" and
                    c["source"] == r["source"] and c["model"] == r["model"] and c["batch_size"] == r["batch_size"]),
                   None)
        if cpu is not None:
            rows.append(_versus(cpu, r, out, [LABEL[r["source"]], r["provider"], r["model"], r["batch_size"]]))
    return rows


def _pct(v, scale=100.0) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.0f}"


def _table_order(r: dict) -> tuple:
    return r["model"], r["batch_size"], config_label(r)


def domain_rows(ok: list[dict]) -> tuple[list[str], list[list]]:
    """Energy per inference per sensor domain (CPU package, DRAM, GPU, ...), gross and net of each
    domain's idle power, with 95 % intervals; the total last."""
    domains = sorted({d for r in ok for d in (r.get("domains") or "").split(",") if d})
    headers = ["configuration", "model", "batch"]
    for d in domains + ["total"]:
        headers += [f"{d}: J gross [95 %]", f"{d}: J net [95 %]"]
    rows = []
    for r in sorted(ok, key=_table_order):
        cells = [config_label(r), r["model"], r["batch_size"]]
        for d in domains + ["total"]:
            for net in ("", "_net"):
                key = f"energy_j_per_inference{net}" + ("" if d == "total" else f"[{d}]")
                v = r.get(key)
                cells.append("-" if v is None else _fmt(v, r[key + "_low"], r[key + "_high"]))
        rows.append(cells)
    return headers, rows


def usage_rows(ok: list[dict]) -> list[list]:
    """Throughput, net energy and resource use per configuration."""
    mib = 2.0 ** 20
    out = []
    for r in sorted(ok, key=_table_order):
        gpu_mem = r.get("gpu_memory_used_bytes")
        out.append([config_label(r), r["model"], r["batch_size"], f"{r['throughput_per_s']:.4g}",
                    f"{r['energy_j_per_sample']:.4g}", f"{r.get('energy_j_per_inference_net', float('nan')):.4g}",
                    _pct(r.get("cpu_util_pct"), 1.0), f"{r.get('rss_bytes', 0) / mib:.0f}", _pct(r.get("gpu_util_pct"), 1.0),
                    "-" if gpu_mem is None else f"{gpu_mem / mib:.0f}"])
    return out


#: what the study's figures mean, as the report states them (docs/SCHEMA.md, "The study's figure")
DEFINITIONS = text(
    "<p><b>What the figures mean.</b> <i>Energy per inference</i> follows the field's back-to-back "
    "convention without the idle energy of the dithering gaps: a run's energy over its window (its inferences "
    "with idle kept before and after) minus the idle power times that window, per inference (<i>net</i>: what the "
    "runs cost above idle), plus the idle power over the inference's own duration (<i>gross</i>). Energy a runtime "
    "leaves running after a call returns (spinning threads, clocks ramping down) is charged to it, as it would be "
    "back to back. 95 % intervals come from the spread between runs and the idle power's own uncertainty, on the "
    "log scale (Cox's interval for a log-normal mean), so that gross energy and time never get a bound below zero "
    "(a net figure's may cross zero: the work is then indistinguishable from idle); each cell says on how many "
    "runs it rests. <i>During the calls</i> is the energy spent while the inferences ran, from greenprobe's "
    "estimator over every sensor update the calls overlap; the <i>after-effect</i> is net minus net during the "
    "calls. Totals add top-level domains only (RAPL core and uncore lie inside their package; packages and DRAM "
    "inside psys where it exists; a GPU inside its Grace Hopper module where NVML reports one).</p>")


def after_rows(ok: list[dict]) -> list[list]:
    """Back-to-back net against the energy during the calls alone, and their difference."""
    out = []
    for r in sorted(ok, key=_table_order):
        v = r.get("energy_j_per_inference_during_calls_net")
        during = "-" if v is None else _fmt(v, r["energy_j_per_inference_during_calls_net_low"],
                                            r["energy_j_per_inference_during_calls_net_high"])
        after = r.get("energy_j_per_inference_after_effect")
        out.append([config_label(r), r["model"], r["batch_size"],
                    _fmt(r["energy_j_per_inference_net"], r["energy_j_per_inference_net_low"],
                         r["energy_j_per_inference_net_high"]), during,
                    "-" if after is None else f"{after:.4g}", r.get("during_calls_reason") or ""])
    return out


def batch_tables(ok: list[dict], level: int = 2) -> list[str]:
    """Per batch size, the paper's table: energy and time per inference of every runtime and model."""
    parts = []
    models = sorted({r["model"] for r in ok})
    for b in sorted({r["batch_size"] for r in ok}):
        headers = ["runtime"] + [f"{m}: energy J/inference [95 %]" for m in models] + \
                  [f"{m}: time ms/inference [95 %]" for m in models]
        rows = []
        for lab in sorted({config_label(r) for r in ok if r["batch_size"] == b}):
            cells = [lab]
            for key, scale in (("energy_j_per_inference", 1.0), ("time_s_per_inference", 1e3)):
                for m in models:
                    r = next((r for r in ok if config_label(r) == lab and r["model"] == m and r["batch_size"] == b), None)
                    cells.append("-" if r is None else _fmt(r[key], r[key + "_low"], r[key + "_high"], scale) +
                                 f" ({r['runs']} runs)" + (" EST." if r.get("estimated") else ""))
            rows.append(cells)
        parts.append(render("<h{{ level }}>Batch size {{ b }}</h{{ level }}>{{ t }}", level=level, b=b,
                            t=table(headers, rows)))
    return parts


#: what the report needs of a study's tables (a table without them is not one of greenprobe's)
SUMMARY_COLUMNS = ("id", "status")
RUN_COLUMNS = ("energy_j_per_inference", "time_s_per_inference")


def _is_generate(out: Path) -> bool:
    spec = out / Layout.SPEC
    return spec.exists() and json.loads(spec.read_text()).get("task") == "generate"


def _json(path: Path, empty):
    return json.loads(path.read_text()) if path.exists() else empty


#: the study as the report opens it; every value in it comes from spec.json and environment.json
INTRO = (
    "<h1>Energy and time of DL inference across runtimes</h1>"
    "<p>A replication of <i>Green AI: A Preliminary Empirical Study on Energy Consumption in DL Models Across "
    "Different Runtime Infrastructures</i> with greenprobe {{ env.get('greenprobe', '') }} on "
    "{{ env.get('platform', '') }}. Profile: <b>{{ spec.get('profile', '?') }}</b>; images {{ spec.get('image_size') }} "
    "px, text {{ spec.get('seq_len') }} tokens, model size {{ spec.get('size') }}, {{ spec.get('runs') }} runs per "
    "configuration of at least {{ spec.get('min_run_s') }} s and {{ spec.get('min_inferences') }} inferences, "
    "{{ spec.get('order', 'blocked') }} in random order, {{ spec.get('rest_s') }} s rest, idle measured "
    "{{ spec.get('baseline_s') }} s before and after; every inference marked by its runtime's worker process "
    "through one sampling daemon.</p>")


def disturbance_paragraph(out: Path) -> list:
    """What other processes did to the runs (study/execute.py Runner.disturbed): how many runs were
    run again because others used more than the spec's max_foreign_cores over them, how many were
    kept disturbed, and the most others used over a kept run."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(out / Layout.SUMMARY).to_pylist()
    except (OSError, ValueError):
        return []
    rows = [r for r in rows if r.get("status") == "ok" and r.get("foreign_cores_max") is not None]
    if not rows:
        return []
    spec = _json(out / Layout.SPEC, {})
    again = sum(r.get("runs_run_again") or 0 for r in rows)
    kept = sum(r.get("runs_disturbed_kept") or 0 for r in rows)
    worst = max(r["foreign_cores_max"] for r in rows)
    gpus = [r["foreign_gpu_max"] for r in rows if r.get("foreign_gpu_max") is not None]
    return [render("<h2>Other processes on the machine</h2><p>Every process's CPU time{% if gpu %} and GPU use{% endif %} "
                   "was recorded during every run. {{ again }} run(s) were run again because other processes used more "
                   "than {{ limit }} cores{% if gpu %} or kept more than {{ gpu_limit }} GPUs' SMs busy{% endif %} on "
                   "average over them{% if kept %}; <b class='warn'>{{ kept }} run(s) are kept though disturbed</b> "
                   "(no attempts left){% endif %}. Over the runs kept, other processes used at most {{ worst }} cores"
                   "{% if gpu %} and {{ gpu }} GPUs' SMs{% endif %}.</p>", again=again, kept=kept,
                   limit=f"{spec.get('max_foreign_cores', 0.25):g}", gpu_limit=f"{spec.get('max_foreign_gpu', 0.1):g}",
                   worst=f"{worst:.2f}", gpu=f"{max(gpus):.2f}" if gpus else "")]


def write_report(directory) -> Path:
    """DIR/report.html. A generative study's folder gets the generative section alone; a
    classification study's gets the paper's sections, and the generative one too when DIR/generate
    holds a generative study (scripts/run.sh runs both quick studies that way)."""
    out = Path(directory)
    summary = out / Layout.SUMMARY
    if summary.exists() and _is_generate(out):
        from .gen_report import section

        parts = [text("<h1>Energy of generative inference across runtimes</h1>"), *disturbance_paragraph(out),
                 *section(out)]
        path = out / Layout.REPORT
        path.write_text(page("greenprobe generative study", parts))
        return path
    if not summary.exists():
        from ..errors import ConfigError

        raise ConfigError(f"no study in {out}: {Layout.SUMMARY} is missing",
                          f"pass the folder a study wrote, or run `greenprobe study --out {out}` first")
    rows = read_table(summary, SUMMARY_COLUMNS, DAMAGED_FIX).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    spec = _json(out / Layout.SPEC, {})
    env = _json(out / Layout.ENVIRONMENT, {})
    sensors = _json(out / Layout.SENSORS, [])
    plots = make_plots(ok, out) if ok else {}
    estimated = any(r.get("estimated") for r in ok)
    parts = [render(INTRO, env=env, spec=spec)]
    if spec.get("profile") == "quick":
        parts.append(text("<p class='warn'>Quick profile: smaller inputs than the paper's (224 px images, 128-token "
                          "text) and few short runs. It exercises the whole matrix; its figures are not the "
                          "paper's.</p>"))
    if estimated:
        parts.append(text("<p class='warn'>Some energy figures are <b>ESTIMATED</b> (no energy sensor: a CPU model), "
                          "not measured. They are marked in every table.</p>"))
    parts.append(DEFINITIONS)
    parts += disturbance_paragraph(out)
    parts.append(text("<h2>Sensors</h2>") + table(
        ["sensor", "domain", "quantity", "update period (ms)", "source", "estimated"],
        [[c.get("sensor"), c.get("domain"), c.get("quantity"), f"{c.get('update_period_ns', 0) / 1e6:.3g}",
          c.get("update_period_source"), c.get("estimated")] for c in sensors]))
    from .findings import findings, node_types

    kinds = node_types(out, ok)
    if len(kinds) > 1:
        parts.append(render("<p class='warn'>The runs ran on {{ n }} kinds of node: each gets its own tables, since "
                            "configurations measured on different hardware are not compared.</p>", n=len(kinds)))
    for kind, rows_k in kinds.items():
        if len(kinds) > 1:
            parts.append(render("<h2>Node type: {{ kind }}</h2>", kind=kind))
        parts += batch_tables(rows_k, level=3 if len(kinds) > 1 else 2)
    if ok:
        rho, _ = spearman([r["time_s_per_inference"] for r in ok], [r["energy_j_per_inference"] for r in ok])
        parts.append(render("<h2>Energy against time</h2><p>Spearman's rho over {{ n }} configurations: "
                            "<b>{{ rho }}</b> (the paper reports 0.99).</p>", n=len(ok), rho=f"{rho:.3f}"))
        parts.append(text("<h2>The paper's findings, held against this data</h2><p>Per node type. Reproduced: the "
                          "test agrees, significantly; not reproduced: it says otherwise, significantly; inconclusive: "
                          "the intervals do not decide; cannot test: what the finding needs is not here. The paper "
                          "measured an RTX 3070 GPU; on a CPU-only node the runtimes are compared on the CPU.</p>"))
        for kind, rows_k in kinds.items():
            parts.append(render("<h3>{{ kind }}</h3>{{ t }}", kind=kind, t=table(
                ["finding", "paper", "here", "test", "detail (95 % intervals)"],
                [[f["finding"], f["paper"], f["verdict"], f["test"], f["detail"]] for f in findings(out, rows_k)])))
    parts += [image(name, data) for name, data in plots.items()]
    versus = ["energy ratio", "energy difference (J)", "significant", "time ratio", "time difference (s)",
              "significant"]
    for title, what, first, rows_v in (
            ("Native against ONNX Runtime", "Ratio ONNX/native, difference ONNX − native", "framework",
             native_vs_onnx(ok, out)),
            ("Execution provider against CPU", "ONNX Runtime, same exported model: ratio provider/CPU, difference "
             "provider − CPU", "exported from", provider_vs_provider(ok, out))):
        if rows_v:
            parts.append(render("<h2>{{ title }}</h2><p>{{ what }} with its Welch 95 % interval over runs, significant "
                                "when the interval excludes 0.</p>{{ t }}", title=title, what=what,
                                t=table([first, "provider", "model", "batch"] + versus, rows_v)))
    if ok:
        parts.append(render("<h2>Energy per domain</h2><p>Per sensor domain, gross and net of that domain's idle power "
                            "(measured before and after the study); the total adds top-level domains only."
                            "{% if estimated %} ESTIMATED domains come from a CPU model, not a sensor.{% endif %}"
                            "</p>{{ t }}", estimated=estimated, t=table(*domain_rows(ok))))
        parts.append(text("<h2>During the calls and after them</h2><p>Net energy per inference (J, 95 %): back to "
                          "back, during the calls alone (the estimator), and the after-effect (their difference).</p>")
                     + table(["configuration", "model", "batch", "back-to-back net", "during the calls, net",
                              "after-effect", "note"], after_rows(ok)))
        parts.append(text("<h2>Throughput and resource use</h2><p>CPU: the worker process's user + system time over "
                          "the run, as a share of all cores. RSS: the worker's resident memory (interleaved order: it "
                          "holds every model of its runtime at once). GPU (NVML, where present): mean utilisation and "
                          "largest memory in use during the runs, all GPUs (NVML's utilisation is the busy share of "
                          "its own 1/6-1 s sample period). Net energy: gross minus idle power x time.</p>") + table(
                         ["configuration", "model", "batch", "samples/s", "J per sample",
                          "net J per inference", "CPU %", "RSS MiB", "GPU %", "GPU memory MiB"], usage_rows(ok)))
    other = [r for r in rows if r["status"] != "ok"]
    if other:
        parts.append(text("<h2>Not measured</h2>") + table(["configuration", "status", "why"], [
            [r.get("id"), r["status"], (r.get("error") or "")[:300]] for r in other]))
    gen = Layout(out).generate
    if (gen / Layout.SUMMARY).exists() and _is_generate(gen):
        from .gen_report import section

        parts += section(gen)
    path = out / Layout.REPORT
    path.write_text(page("greenprobe study", parts))
    return path
