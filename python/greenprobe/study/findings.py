"""The paper's findings held against a study's data, per node type: for each, whether this data
reproduces it, with the test and its interval, or why it cannot be tested here.

Verdicts: "reproduced", "not reproduced" (the data says otherwise, significantly), "inconclusive"
(the intervals do not decide), "cannot test" (what it needs is missing: a runtime, a GPU provider,
or measured energy). Comparisons are Welch tests on the per-run energy per inference (stats.welch,
SciPy), 95 %, two-sided; the correlation is Spearman's with a bootstrap 95 % interval over
configurations (scipy.stats.bootstrap).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from ..parquet import read_table
from .aggregate import host_hardware
from .layout import DAMAGED_FIX, Layout
from .stats import welch

VISION = ("resnet50", "mobilenet_v2")
KEY = "energy_j_per_inference"


def node_types(out: Path, ok: list[dict]) -> dict[str, list[dict]]:
    """Configurations grouped by the hardware of the hosts their runs ran on (their ``node``
    column; rebuilt from the sittings for summaries written before it existed): one group on one
    machine, one per node type on a mixed cluster."""
    from .aggregate import node_of

    hw = None
    groups: dict[str, list[dict]] = {}
    for r in ok:
        kind = r.get("node")
        if not kind:
            hw = hw if hw is not None else host_hardware(out)
            kind = node_of(r.get("hosts") or "", hw)
        groups.setdefault(kind, []).append(r)
    return groups


def _runs(out: Path, row: dict) -> list[float]:
    return read_table(Layout(out).runs_table(row["id"]), (KEY,), DAMAGED_FIX).column(KEY).to_pylist()


def _find(ok: list[dict], **kw) -> Optional[dict]:
    return next((r for r in ok if all(r.get(k) == v for k, v in kw.items())), None)


def _compare(out: Path, winner: dict, other: dict) -> tuple[str, str]:
    """(verdict, text) for "``winner`` uses less energy than ``other``"."""

    d, lo, hi, sig = welch(_runs(out, winner), _runs(out, other))  # other - winner
    rel = d / winner[KEY] if winner[KEY] else float("nan")
    text = f"{other['id']} - {winner['id']}: {d:+.3g} J [{lo:+.3g}, {hi:+.3g}] ({rel:+.1%})"
    if sig and d > 0:
        return "reproduced", text
    if sig and d < 0:
        return "not reproduced", text
    return "inconclusive", text


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return "cannot test"
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    if any(v == "not reproduced" for v in verdicts):
        return "not reproduced"
    return "inconclusive"


def findings(out: Path, ok: list[dict]) -> list[dict]:
    """One row per finding: finding, paper, verdict, test, detail."""
    out = Path(out)
    rows = []
    measured = [r for r in ok if not r.get("estimated")]

    # 1. energy tracks time
    f = {"finding": "energy tracks inference time", "paper": "Spearman rho 0.99 (p < 0.0001)",
         "test": "Spearman's rho over configurations, bootstrap 95 % interval; reproduced when rho >= 0.9 and p < 0.05"}
    if len(measured) < 4:
        f.update(verdict="cannot test", detail=_missing(ok, measured, "") if ok and not measured else "fewer than 4 configurations")
    else:
        from scipy import stats

        t = np.array([r["time_s_per_inference"] for r in measured])
        e = np.array([r[KEY] for r in measured])
        res = stats.spearmanr(t, e)
        with warnings.catch_warnings():  # resamples of few configurations may repeat one: rho undefined there
            warnings.simplefilter("ignore")
            ci = stats.bootstrap((t, e), lambda x, y: stats.spearmanr(x, y).statistic, paired=True,
                                 vectorized=False, n_resamples=999, random_state=np.random.default_rng(0),
                                 method="percentile").confidence_interval
        rho = float(res.statistic)
        f.update(verdict="reproduced" if rho >= 0.9 and res.pvalue < 0.05 else "not reproduced",
                 detail=f"rho {rho:.3f} [{ci.low:.3f}, {ci.high:.3f}], p {res.pvalue:.2g}, {len(measured)} configurations")
    rows.append(f)

    def native(rt, model, b):
        return _find(measured, runtime=rt, model=model, batch_size=b)

    def held(f: dict, pairs: list, missing: str) -> dict:
        """A finding that each (winner, other) pair must show: winner significantly lower."""
        pairs = [(w, o) for w, o in pairs if w is not None and o is not None]
        results = [_compare(out, w, o) for w, o in pairs]
        f.update(verdict=_combine([v for v, _ in results]),
                 detail="; ".join(t for _, t in results) or missing)
        return f

    # 2. MXNet lowest energy for vision at batch 1
    rows.append(held({"finding": "MXNet uses the least energy on the vision models at batch 1",
                      "paper": "MXNet ahead of PyTorch and TensorFlow (GPU)",
                      "test": "Welch on per-run energy, MXNet against each other native framework, per vision model"},
                     [(native("mxnet", m, 1), native(rt, m, 1)) for m in VISION for rt in ("torch", "tensorflow")],
                     _missing(ok, measured, "MXNet and another framework on a vision model at batch 1")))

    # 3. PyTorch best for BERT
    rows.append(held({"finding": "PyTorch uses the least energy on BERT",
                      "paper": "PyTorch ahead of TensorFlow and MXNet (GPU)",
                      "test": "Welch on per-run energy, PyTorch against each other native framework, per batch size"},
                     [(native("torch", "bert-base-uncased", b), native(rt, "bert-base-uncased", b))
                      for b in sorted({r["batch_size"] for r in measured}) for rt in ("tensorflow", "mxnet")],
                     _missing(ok, measured, "PyTorch and another framework on BERT")))

    # 4. ONNX Runtime usually ahead of its source framework
    f = {"finding": "ONNX Runtime usually uses less energy than the framework its model came from",
         "paper": "in most cases",
         "test": "Welch per (framework, model, batch, provider); reproduced when ONNX Runtime is significantly "
                 "lower in more than half of the pairs"}
    pairs = []
    for r in measured:
        if r["runtime"] != "onnxruntime":
            continue
        nat = native(r["source"], r["model"], r["batch_size"])
        if nat is not None:
            pairs.append(_compare(out, r, nat)[0])
    if pairs:
        wins = sum(v == "reproduced" for v in pairs)
        f.update(verdict="reproduced" if wins > len(pairs) / 2 else "not reproduced" if
                 sum(v == "not reproduced" for v in pairs) >= len(pairs) / 2 else "inconclusive",
                 detail=f"ONNX Runtime significantly lower in {wins} of {len(pairs)} pairs, significantly higher in "
                        f"{sum(v == 'not reproduced' for v in pairs)}")
    else:
        f.update(verdict="cannot test", detail=_missing(ok, measured, "a framework and ONNX Runtime on its export"))
    rows.append(f)

    # 5. ResNet-50 at batch 64: ONNX Runtime about 10 % behind PyTorch
    rows.append(held({"finding": "ResNet-50 at batch 64: ONNX Runtime (PyTorch's export) uses about 10 % more energy "
                                 "than PyTorch",
                      "paper": "+10 % energy and time (GPU)",
                      "test": "Welch, per provider; reproduced when ONNX Runtime is significantly higher"},
                     [(native("torch", "resnet50", 64), r) for r in measured if r["runtime"] == "onnxruntime"
                      and r["source"] == "torch" and r["model"] == "resnet50" and r["batch_size"] == 64],
                     _missing(ok, measured, "PyTorch and ONNX Runtime on ResNet-50 at batch 64")))

    # 6. TensorRT ahead of CUDA
    no_gpu = not any(r.get("provider") in ("cuda", "tensorrt") for r in ok)
    rows.append(held({"finding": "TensorRT uses less energy than CUDA as ONNX Runtime's execution provider",
                      "paper": "large gains for MXNet and PyTorch models, mixed for TensorFlow",
                      "test": "Welch per (source, model, batch), TensorRT against CUDA"},
                     [(r, _find(measured, runtime="onnxruntime", provider="cuda", source=r["source"], model=r["model"],
                                batch_size=r["batch_size"]))
                      for r in measured if r["runtime"] == "onnxruntime" and r["provider"] == "tensorrt"],
                     "no GPU here: the CUDA and TensorRT providers need one" if no_gpu
                     else _missing(ok, measured, "both providers")))
    return rows


def _missing(ok: list[dict], measured: list[dict], what: str) -> str:
    if ok and not measured:
        return "energy is estimated here (no energy sensor): a finding about energy needs measured energy"
    return f"this study has no {what}"
