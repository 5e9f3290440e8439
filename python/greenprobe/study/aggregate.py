"""Aggregating a study: each run's back-to-back figures, each configuration's row with its 95 %
intervals (from the spread between runs and the idle power's uncertainty), the estimator's energy
during the calls, and summary.parquet over every configuration, from the files on disk (so a
resumed or a Slurm study aggregates what all its sittings wrote)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..topology import split_name, top_level
from .layout import Layout
from .stats import mean_ci, mean_ci_with


def _tops(sensors: list[dict], names: list[str]) -> set[str]:
    """The 'sensor/domain' names a total may add (top-level domains), from the study's channels
    (sensors.json) where they state their parents, else by RAPL's naming."""
    chans = [c for c in sensors if f"{c['sensor']}/{c['domain']}" in names]
    have = {f"{c['sensor']}/{c['domain']}" for c in chans}
    chans += [dict(zip(("sensor", "domain"), split_name(n))) for n in names if n not in have]
    return {f"{s}/{d}" for s, d in top_level(chans)}


def run_figures(run: dict, domains: list[str], idle: dict) -> dict:
    """One run's back-to-back figures per domain: net = (window energy - idle power x window) /
    inferences, what the run cost above idle, its dithering gaps' idle excluded; gross = net + idle
    power x the inference's own duration. ``idle``: name -> (power W, its standard error)."""
    n, dur, win = run["inferences"], run["time_s_per_inference"], run["window_s"]
    out = {}
    for name in domains:
        p, _ = idle.get(name, (float("nan"), float("nan")))
        net = (run[f"energy_j_window[{name}]"] - p * win) / n
        out[f"energy_j_per_inference_net[{name}]"] = net
        out[f"energy_j_per_inference[{name}]"] = net + p * dur
    return out


def config_row(cfg_dir: Path, runs_wanted: int, idle_w: dict, calls: dict | None = None,
               sensors: Optional[list] = None) -> Optional[dict]:
    """One configuration's summary from its run files (None while runs are missing); writes
    runs.parquet, inferences.parquet and result.json.

    The figure (docs/SCHEMA.md, "The study's figure"): per run, the back-to-back convention without
    the idle energy of the dithering gaps (run_figures), per domain and in total over top-level
    domains; per configuration, the mean over runs with a 95 % interval from their spread (t, R - 1)
    and the idle power's own uncertainty. Beside it, from the sitting's estimator (``calls``), the
    energy during the calls alone, and the difference, the after-effect: what the runtime spent
    after its calls returned."""
    runs = sorted((json.loads(p.read_text()) for p in Layout.run_rows_in(cfg_dir)), key=lambda x: x["run"])
    if len(runs) < runs_wanted:
        return None
    domains = [d for d in runs[0]["domains"].split(",") if d]
    tops = [d for d in domains if d in _tops(sensors or [], domains)]
    idle_se_terms = {k: [] for k in ("net", "gross")}
    for r in runs:
        idle = idle_w.get(str(r["session"]), {})
        r.update(run_figures(r, domains, idle))
        r["idle_power_w"] = sum(idle.get(n, (float("nan"), 0.0))[0] for n in tops)
        for net in ("", "_net"):
            r[f"energy_j_per_inference{net}"] = sum(r[f"energy_j_per_inference{net}[{n}]"] for n in tops)
        idle_se = math.sqrt(sum(idle.get(n, (0.0, 0.0))[1] ** 2 for n in tops))
        idle_se_terms["net"].append(idle_se * r["window_s"] / r["inferences"])
        idle_se_terms["gross"].append(idle_se * abs(r["window_s"] / r["inferences"] - r["time_s_per_inference"]))
    pq.write_table(pa.Table.from_pylist(runs), cfg_dir / Layout.RUNS_TABLE)
    parts = []
    for r in runs:
        t = pq.read_table(Layout.run_inferences_in(cfg_dir, r["run"]))
        total = np.sum([t[f"energy_j_interpolated[{n}]"].to_numpy() for n in tops], axis=0) if tops else None
        if total is not None:
            t = t.append_column("energy_j_interpolated", pa.array(total))
        parts.append(t)
    pq.write_table(pa.concat_tables(parts, promote_options="default"), cfg_dir / Layout.INFERENCES)
    first = runs[0]
    row = {"id": cfg_dir.name, **json.loads((cfg_dir / Layout.CONFIG).read_text()), "status": "ok", "error": "",
           "runs": len(runs), "inferences_per_run": first["inferences"], "estimated": any(r["estimated"] for r in runs),
           "device": first["device"], "domains": first["domains"], "total_domains": ",".join(tops),
           "windows_complete": all(r.get("window_complete", True) for r in runs),
           **usage_columns(runs), **disturbance_columns(cfg_dir, runs)}
    mean, low, high = mean_ci([r["time_s_per_inference"] for r in runs], positive=True)
    row["time_s_per_inference"], row["time_s_per_inference_low"], row["time_s_per_inference_high"] = mean, low, high
    for net, which in (("", "gross"), ("_net", "net")):
        common = float(np.mean(idle_se_terms[which]))
        for suffix in [""] + [f"[{n}]" for n in domains]:
            key = f"energy_j_per_inference{net}{suffix}"
            # gross energy is above zero, and so is its interval; a net figure's may cross it
            m, lo, hi = mean_ci_with([r[key] for r in runs], common if not suffix else 0.0, positive=not net)
            row[key], row[key + "_low"], row[key + "_high"] = m, lo, hi
    row.update(during_calls(cfg_dir.name, calls or {}, row, tops))
    row["throughput_per_s"] = row["batch_size"] / row["time_s_per_inference"] if row["time_s_per_inference"] else 0.0
    row["energy_j_per_sample"] = row["energy_j_per_inference"] / row["batch_size"]
    write_json(cfg_dir / Layout.RESULT, row)
    return row


def disturbance_columns(cfg_dir: Path, runs: list[dict]) -> dict:
    """How much other processes used the machine during the configuration's runs: runs set aside
    as disturbed and run again (configs/<id>/disturbed/), runs kept though disturbed (no attempts
    left), and the most cores others used over a kept run."""
    again = len(Layout.disturbed_rows_in(cfg_dir))
    cores = [r["foreign_cores"] for r in runs if r.get("foreign_cores") is not None]
    gpus = [r["foreign_gpu"] for r in runs if r.get("foreign_gpu") is not None]
    return {"runs_run_again": again, "runs_disturbed_kept": sum(1 for r in runs if r.get("disturbed")),
            "foreign_cores_max": float(max(cores)) if cores else None,
            "foreign_gpu_max": float(max(gpus)) if gpus else None}


def usage_columns(runs: list[dict]) -> dict:
    """A configuration's idle power, CPU, memory and GPU use over its runs, and where they ran:
    host names and, for runs in Slurm jobs, the job ids."""
    row = {"idle_power_w": float(np.mean([r["idle_power_w"] for r in runs])),
           # % of all cores, as gpu_util_pct is of the GPUs (runs written before 0.1.0's rename: a fraction)
           "cpu_util_pct": float(np.mean([r["cpu_util_pct"] if "cpu_util_pct" in r else 100 * r["cpu_util"]
                                          for r in runs])),
           "rss_bytes": int(max(r["rss_bytes"] for r in runs)),
           "hosts": ",".join(sorted({r.get("host") or "" for r in runs} - {""})),
           "slurm_job_ids": ",".join(sorted({str(r.get("slurm_job_id") or "") for r in runs} - {""}))}
    for key in ("gpu_util_pct", "gpu_memory_util_pct"):
        vals = [r.get(key) for r in runs if r.get(key) is not None]
        row[key] = float(np.mean(vals)) if vals else None
    mem = [r.get("gpu_memory_used_bytes") for r in runs if r.get("gpu_memory_used_bytes") is not None]
    row["gpu_memory_used_bytes"] = float(max(mem)) if mem else None
    return row


def during_calls(cfg_id: str, calls: dict, row: dict, tops: list[str]) -> dict:
    """The energy during the calls alone (the estimator, over every sitting's marks) per inference,
    gross and net, with its 95 % interval, and the after-effect: the back-to-back net minus the
    during-calls net (what ran on after the calls returned: spinning threads, clocks ramping
    down). Null where the estimator could not say."""
    mine = calls.get(cfg_id, {})
    out = {"during_calls_status": "ok" if mine else "not-estimated",
           "during_calls_reason": "" if mine else "no estimate for this configuration's calls"}
    totals = {"": [0.0, 0.0], "_net": [0.0, 0.0]}
    for name, est in mine.items():
        if est.get("status") != "ok":
            out["during_calls_status"], out["during_calls_reason"] = "not-estimated", f"{name}: {est.get('reason')}"
            continue
        for net in ("", "_net"):
            v, half = est[f"energy_j_per_call{net}"], est[f"half{net}"]
            out[f"energy_j_per_inference_during_calls{net}[{name}]"] = v
            if name in tops:
                totals[net][0] += v
                totals[net][1] += half
    for net, (v, half) in totals.items():
        ok = out["during_calls_status"] == "ok"
        out[f"energy_j_per_inference_during_calls{net}"] = v if ok else None
        out[f"energy_j_per_inference_during_calls{net}_low"] = v - half if ok else None
        out[f"energy_j_per_inference_during_calls{net}_high"] = v + half if ok else None
    ok = out["during_calls_status"] == "ok"
    out["energy_j_per_inference_after_effect"] = (row["energy_j_per_inference_net"]
                                                  - out["energy_j_per_inference_during_calls_net"]) if ok else None
    return out


def idle_power(out: Path) -> dict:
    """Session name -> {"sensor/domain": (idle power W, its standard error)}, from
    sessions/<k>/baseline.json."""
    powers = {}
    for p in Layout(out).session_files(Layout.BASELINE):
        powers[p.parent.name] = {f"{b['sensor']}/{b['domain']}": (float(b["power_w"]), float(b["power_w_se"]))
                                      for b in json.loads(p.read_text())}
    return powers


def calls_estimates(out: Path) -> dict:
    """Configuration -> {"sensor/domain": estimate} from sessions/<k>/calls.json, sittings
    combined by their calls (a resumed study has several)."""
    merged: dict = {}
    for p in Layout(out).session_files(Layout.CALLS):
        for cfg, by_domain in json.loads(p.read_text()).items():
            for name, est in by_domain.items():
                merged.setdefault(cfg, {}).setdefault(name, []).append(est)
    out_: dict = {}
    for cfg, by_domain in merged.items():
        for name, ests in by_domain.items():
            ok = [e for e in ests if e.get("status") == "ok"]
            if not ok:
                out_.setdefault(cfg, {})[name] = ests[0]
                continue
            w = np.array([e["calls"] for e in ok], np.float64)
            w /= w.sum()
            comb = {"status": "ok", "calls": int(sum(e["calls"] for e in ok))}
            for net in ("", "_net"):
                comb[f"energy_j_per_call{net}"] = float(sum(wi * e[f"energy_j_per_call{net}"] for wi, e in zip(w, ok)))
                comb[f"half{net}"] = float(math.sqrt(sum((wi * e[f"half{net}"]) ** 2 for wi, e in zip(w, ok))))
            out_.setdefault(cfg, {})[name] = comb
    return out_


def estimate_calls(probe, out_dir: Path) -> dict:
    """The estimator over one sitting: every configuration's inferences and runs as labels of their
    own (a run holds its inferences and the gaps between them), so each configuration's energy
    during its calls is told apart from the others' and from idle. Written to calls.json."""
    from ..summary import summarise

    import pyarrow as pa

    from ..store import mark_attrs

    marks = probe.marks_table()
    keep, labels = [], []
    # attempts set aside as disturbed (configs/<id>/disturbed/rRUN-SITTING-ATTEMPT.json): their marks
    # get a label of their own, so that their time explains its energy without counting as the
    # configuration's calls
    aside = {(p.parent.parent.name, p.name) for p in Layout(Path(out_dir).parent.parent).disturbed_rows()}
    sitting = Path(out_dir).name
    for k, (label, attrs) in enumerate(zip(marks.column("label").to_pylist(), mark_attrs(marks))):
        if label in ("inference", "run") and "config" in attrs:
            keep.append(k)
            name = Layout.disturbed_name(attrs.get("run", 0), sitting, attrs.get("attempt", 0))
            set_aside = (attrs["config"], name) in aside
            labels.append(f"{'disturbed-' if set_aside else ''}{label}:{attrs['config']}")
    if not keep:
        return {}
    mine = marks.take(pa.array(keep, pa.int64())).set_column(0, "label", pa.array(labels, pa.string()))
    channels = probe.channels()
    rows = summarise(mine, channels, probe.baseline(channels))
    calls: dict = {}
    for r in rows:
        if not r["label"].startswith("inference:") or r["sensor"] == "all":
            continue
        half = (r["energy_j_per_call_high"] - r["energy_j_per_call_low"]) / 2
        half_net = (r["energy_j_per_call_net_high"] - r["energy_j_per_call_net_low"]) / 2
        calls.setdefault(r["label"].split(":", 1)[1], {})[f"{r['sensor']}/{r['domain']}"] = {
            "status": r["status"], "reason": r["reason"], "calls": r["calls"], "model": r["model"],
            "energy_j_per_call": r["energy_j_per_call"], "half": half,
            "energy_j_per_call_net": r["energy_j_per_call_net"], "half_net": half_net}
    write_json(Path(out_dir) / Layout.CALLS, calls)
    return calls


def collect(out: Path, skipped: list[dict], runs_wanted: int) -> pa.Table:
    """summary.parquet: one row per configuration (finished, failed, unfinished or skipped)."""
    out = Path(out)
    idle_w = idle_power(out)
    calls = calls_estimates(out)
    sensors = study_channels(out)
    rows = []
    lay = Layout(out)
    hw = None
    for d in sorted(p for p in lay.configs.glob("*") if (p / Layout.CONFIG).exists()):
        cfg = json.loads((d / Layout.CONFIG).read_text())
        if (d / Layout.FAILED).exists():
            f = json.loads((d / Layout.FAILED).read_text())
            rows.append({"id": d.name, **cfg, "status": "skipped" if f.get("skipped") else "failed", "error": f["error"],
                         **({"reason": f["error"], "fix": f.get("fix", "")} if f.get("skipped") else {})})
            continue
        if cfg.get("task") == "generate":
            from .generate import gen_config_row

            row = gen_config_row(d, runs_wanted, idle_w, sensors)
        else:
            row = config_row(d, runs_wanted, idle_w, calls, sensors)
        if row is not None:  # the hardware it ran on: reports compare configurations per node type
            hw = hw if hw is not None else host_hardware(out)
            row["node"] = node_of(row.get("hosts") or "", hw)
        if row is None:
            n = len(lay.runs_done(d.name))
            row = {"id": d.name, **cfg, "status": "unfinished", "error": f"{n} of {runs_wanted} runs done: run the "
                                                                          "study again to finish it"}
        rows.append(row)
    have = {r["id"] for r in rows}
    rows += [{**s, "status": "skipped", "error": s["reason"]} for s in skipped if s["id"] not in have]
    # every column any row has (from_pylist keeps the first row's keys only: a skipped row's fix was lost)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows])
    pq.write_table(table, lay.summary)
    return table


def host_hardware(out: Path) -> dict[str, str]:
    """Host name -> its hardware in a few words (CPU model, GPUs), from each sitting's
    environment.json."""
    hw: dict[str, str] = {}
    for p in Layout(out).session_files(Layout.ENVIRONMENT):
        env = json.loads(p.read_text())
        h = env.get("hardware", {})
        desc = h.get("cpu_model") or env.get("processor") or "?"
        gpus = h.get("gpus") or []
        desc += f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU"
        hw[env.get("host", "")] = desc
    return hw


def node_of(hosts: str, hw: dict[str, str]) -> str:
    """The node type of a configuration whose runs ran on ``hosts`` (a comma list)."""
    kinds = sorted({hw.get(h, "?") for h in hosts.split(",") if h})
    return " + ".join(kinds) or "this machine"


def study_channels(out: Path) -> list[dict]:
    """The channels the study measured with (sensors.json), from every sitting: Slurm jobs each
    write their own, and nodes may differ."""
    seen, chans = set(), []
    lay = Layout(out)
    for p in [lay.sensors] + lay.session_files(Layout.SENSORS):
        if p.exists():
            for c in json.loads(p.read_text()):
                key = (c.get("sensor"), c.get("domain"))
                if key not in seen:
                    seen.add(key)
                    chans.append(c)
    return chans


def write_json(path: Path, obj) -> None:
    """Written whole or not at all (a crash leaves the old file or none)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
