"""A MIG-enabled GPU's energy split among its GPU instances and their processes (issue 22), against an
exact truth, on a virtual clock.

NVML gives no per-process use on a MIG-enabled GPU; GPM gives each GPU instance's activity. The fake
NVML (FAKE_NVML_MIG) splits GPU 0 into GPU instances 1 and 5; each process of FAKE_NVML_PROCS runs in
one, keeps it busy on a schedule and adds its watts to the GPU's power while busy; GPM's counters
refresh every 100 ms, as the header says the real ones do."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_standin import busy_s, proc_tree, run, schedules

IDLE_W = 60.0
DRIFT_W = 3.0
#: (GPU instance, watts while busy): 4101 alone in instance 1; 4102 and 4103 take turns in instance 5
PROCS = {4101: (1, 50.0), 4102: (5, 120.0), 4103: (5, 120.0)}


def mig_schedules(seed: int, seconds: float, t0: int) -> dict:
    """Busy spans per pid: 4101 on a schedule of its own; instance 5 on another, each of its busy
    spans given to 4102 or 4103 at random (processes that share an instance take turns on it)."""
    own = schedules(seed, seconds, t0, pids=(4101, 5))
    rng = np.random.default_rng(seed + 1)
    spans = {4101: own[4101], 4102: [], 4103: []}
    for span in own[5]:
        spans[4102 if rng.random() < 0.5 else 4103].append(span)
    return spans


def write_procs(path, spans: dict) -> None:
    path.write_text("".join(f"0 {pid} {PROCS[pid][1]} {a} {b} {PROCS[pid][0]}\n"
                            for pid, ss in spans.items() for a, b in ss))


def test_each_mig_instance_gets_its_share_and_processes_that_share_one_say_so(tmp_path, fake_nvml, nvml_env):
    """The process alone in its instance: within 5 % of w x its busy seconds, inside its interval, its
    own coefficient. The two that share an instance: one shared coefficient; their sum within 5 % of
    their exact sum; each one's interval, which allows any split, covers its truth. The GPU's rows add
    up to its measured energy."""
    t0, seconds = 10**12, 60.0
    spans = mig_schedules(7, seconds, t0)
    procs = tmp_path / "procs.txt"
    write_procs(procs, spans)
    nvml_env(gpus=1, mig=0, update_ms=100, t0_ns=t0, waveform="sine", base_w=IDLE_W, amp_w=DRIFT_W, freq_hz=0.13,
             procs=str(procs), gpm_refresh_ms=100)
    probe = run([fake_nvml], t0, seconds, sensors=["nvml"], nvml_library=str(fake_nvml), nvml_min_period_us=100,
                proc_root=str(proc_tree(tmp_path / "proc", PROCS)))
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    table = probe.consumers(a, b).to_pylist()
    gpu = [r for r in table if r["domain"] == "gpu0"]
    rows = {r["pid"]: r for r in gpu if r["kind"] == "process"}
    assert set(rows) == set(PROCS), gpu
    truth = {pid: w * busy_s(spans[pid], a, b) for pid, (_, w) in PROCS.items()}
    for pid, r in rows.items():
        print(f"pid {pid} (instance {PROCS[pid][0]}, {PROCS[pid][1]:g} W): {r['energy_j']:.1f} J vs exact "
              f"{truth[pid]:.1f} J ({r['energy_j'] / truth[pid] - 1:+.2%}), 95 % [{r['energy_j_low']:.1f}, "
              f"{r['energy_j_high']:.1f}], {r['coefficient']}: {r['note']}")
        assert r["energy_j_low"] <= truth[pid] <= r["energy_j_high"], (pid, r, truth[pid])
    alone = rows[4101]
    assert alone["coefficient"] == "own" and "MIG GPU instance 1" in alone["note"], alone
    assert abs(alone["energy_j"] - truth[4101]) < 0.05 * truth[4101]
    # the instance 4101 had to itself: its busy seconds are the instance's, as GPM gave them
    assert alone["cpu_s"] == pytest.approx(busy_s(spans[4101], a, b), rel=0.03)
    for pid in (4102, 4103):
        r = rows[pid]
        assert r["coefficient"] == "shared" and "MIG GPU instance 5" in r["note"], r
        assert "split among them is not" in r["note"] and r["energy_j_low"] == 0.0, r
    pair, pair_truth = rows[4102]["energy_j"] + rows[4103]["energy_j"], truth[4102] + truth[4103]
    print(f"instance 5: {pair:.1f} J vs exact {pair_truth:.1f} J ({pair / pair_truth - 1:+.2%})")
    assert abs(pair - pair_truth) < 0.05 * pair_truth
    measured = probe.energy(a, b)[0]["energy_j"]
    assert sum(r["energy_j"] for r in gpu) == pytest.approx(measured, rel=1e-9)
    # a process's tree on the MIG GPU: its share, with bounds that allow any split of the instance
    tree = {r["domain"]: r for r in probe.process_tree(4102, a, b)}
    assert tree["gpu0"]["energy_j"] == pytest.approx(rows[4102]["energy_j"], rel=1e-9)
    assert tree["gpu0"]["energy_j_low"] == 0.0 and "any split" in tree["gpu0"]["note"], tree["gpu0"]


def test_a_mig_gpu_without_gpm_is_unattributed_with_why(tmp_path, fake_nvml, nvml_env):
    """Before Hopper there is no GPM: the MIG GPU's energy is one unattributed row that says so, not
    idle and not a guess."""
    t0, seconds = 10**12, 6.0
    spans = mig_schedules(8, seconds, t0)
    procs = tmp_path / "procs.txt"
    write_procs(procs, spans)
    nvml_env(gpus=1, mig=0, update_ms=100, t0_ns=t0, waveform="constant", base_w=IDLE_W, procs=str(procs),
             no_gpm=1)
    probe = run([fake_nvml], t0, seconds, sensors=["nvml"], nvml_library=str(fake_nvml), nvml_min_period_us=100,
                proc_root=str(proc_tree(tmp_path / "proc", PROCS)))
    a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
    rows = [r for r in probe.consumers(a, b).to_pylist() if r["domain"] == "gpu0"]
    assert [r["kind"] for r in rows] == ["unattributed"], rows
    assert "MIG mode is on" in rows[0]["note"] and "GPM" in rows[0]["note"], rows[0]["note"]
    assert rows[0]["energy_j"] == pytest.approx(probe.energy(a, b)[0]["energy_j"], rel=1e-9)


class InstanceReader:
    """A usage reader that answers as NvmlUsage does on a MIG-enabled GPU: GPU 0's instance 5, busy a
    known share of each sweep, lists process 4102 from ``first_ns`` on and 4103 from ``joins_ns`` on."""

    kind, process_support = "nvml", ""

    def __init__(self, t0: int, joins_ns: int, busy: np.ndarray, step_ns: int, first_ns: int = 0):
        self.t0, self.joins, self.busy, self.step, self.first = t0, joins_ns, busy, step_ns, first_ns

    def processes(self, since_us: int, at_ns: int) -> list:
        k = (at_ns - self.t0) // self.step
        count = int(self.busy[:k].sum() * self.step)
        pids = ([4102] if at_ns >= self.first else []) + ([4103] if at_ns >= self.joins else [])
        return [{"index": 0, "pid": p, "t_us": 0, "sm_util_pct": 0, "memory_util_pct": 0, "t_ns": at_ns,
                 "gfx_busy_ns": count, "gpu_instance": 5, "count_since_ns": self.t0} for p in pids or [0]]

    def process_errors(self) -> list:
        return []


def test_processes_that_shared_an_instance_share_a_coefficient_even_when_their_use_differs(tmp_path):
    """4102 has instance 5 to itself for 20 s, then shares it with 4103: their columns of use differ
    (alone, then even shares), so the fit alone would give each its own coefficient and so claim to
    know their split; they are tied instead, one shared coefficient, the instance's power per busy
    second, and each interval runs from 0."""
    from greenprobe.consumer_fit import _window_use, fit_domain
    from greenprobe.consumers import UseRecorder

    t0, step, n = 10**12, 250_000_000, 160
    busy = np.random.default_rng(3).uniform(0, 1, n)  # the instance's busy share of each sweep window
    reader = InstanceReader(t0, t0 + n // 2 * step, busy, step)
    rec = UseRecorder(["process"], period_s=0.25, proc_root=str(proc_tree(tmp_path / "proc", (4102, 4103))),
                      gpu_readers=[reader])
    for i in range(n + 1):
        rec.read_at(t0 + i * step)
    use = rec.use("gpu")
    assert set(use.tied) == {"4102@gpu0", "4103@gpu0"} and len(set(use.tied.values())) == 1, use.tied
    windows, k, w, d, totals = _window_use(use, t0, t0 + n * step)
    energy = 60.0 * step / 1e9 + 150.0 * busy[windows] * step / 1e9  # idle + 150 W per busy second
    fit, why = fit_domain(use, windows, k, w, d, totals, energy)
    assert fit is not None, why
    a, b = (int(fit.group_of[i]) for i in (use.consumers.index(next(c for c in use.consumers if c.pid == p))
                                            for p in (4102, 4103)))
    assert a == b >= 0 and fit.coefficient[a] == "shared", (fit.group_of, fit.coefficient)
    assert fit.beta[1 + a] == pytest.approx(150.0, rel=1e-6) and fit.beta[0] == pytest.approx(60.0, rel=1e-6)
    # without the tie, the two columns are told apart: each its own coefficient, a split claimed
    use.tied = {}
    fit, _ = fit_domain(use, windows, k, w, d, totals, energy)
    assert fit.coefficient == ["own", "own"], fit.coefficient


def test_an_instance_busy_with_no_process_listed_is_its_own_consumer_and_ties_merge(tmp_path):
    """Busy time while the instance lists no process (its processes hidden from this namespace, or gone
    between two reads) is the instance's own consumer, not idle; a piece is split among the processes
    listed at either end of it; two ties that come to share a member become one; what is known of
    consumers the recorder forgets goes with them."""
    from greenprobe.consumers import GpuProcessReader, UseRecorder

    t0, step, n = 10**12, 250_000_000, 40
    busy = np.full(n, 0.5)
    reader = InstanceReader(t0, t0 + 20 * step, busy, step, first_ns=t0 + 10 * step)
    rec = UseRecorder(["process"], period_s=0.25, proc_root=str(proc_tree(tmp_path / "proc", (4102, 4103))),
                      gpu_readers=[reader])
    for i in range(n + 1):
        rec.read_at(t0 + i * step)
    use = rec.use("gpu")
    busy_s = {c.name: float(use.cpu_between(t0, t0 + n * step)[i]) for i, c in enumerate(use.consumers)}
    # sweeps 1-9: no process listed (0.125 s each); the piece ending at sweep 10 goes to 4102, listed there
    assert busy_s["(MIG GPU instance 5: no process listed)"] == pytest.approx(9 * 0.125), busy_s
    assert sum(busy_s.values()) == pytest.approx(n * 0.125), "every busy second is someone's"
    assert use.tied["4102@gpu0"] == use.tied["4103@gpu0"], use.tied

    g = GpuProcessReader([reader])
    g._tie(["a@gpu0", "b@gpu0"])
    g._tie(["c@gpu0", "d@gpu0"])
    assert len({g.tied[k] for k in "abcd" for k in [k + "@gpu0"]}) == 2
    g._tie(["b@gpu0", "c@gpu0"])  # a member of each: one tie
    assert len({g.tied[k + "@gpu0"] for k in "abcd"}) == 1, g.tied
    g.spread |= {"a@gpu0", "z@gpu0"}
    g.prune({"a@gpu0", "b@gpu0"})
    assert set(g.tied) == {"a@gpu0", "b@gpu0"} and g.spread == {"a@gpu0"}


def test_the_fit_reads_sharp_use_as_the_coarse_counter_smears_the_energy(tmp_path, fake_nvml, nvml_env):
    """GPM's counts are read at the sweeps; the windows' energy is NVML's 100 ms counter interpolated
    there. Fitted as they come, the instance's power per busy second reads low on every seed (-1.6 %
    on average, found by bench_gpu_consumers); put through the counter's smearing (counter_smoother),
    within a few tenths of a percent. On a virtual clock, so the same every run."""
    from greenprobe.attribution import Timeline, choose_channels
    from greenprobe.consumer_fit import _window_use, counter_smoother, fit_domain
    from greenprobe.consumers import gpu_use_for

    t0, seconds, errors = 10**12, 60.0, {"as read": [], "smeared alike": []}
    for seed in (1, 2, 3):
        spans = {4101: mig_schedules(seed, seconds, t0)[4101]}
        procs = tmp_path / f"procs{seed}.txt"
        write_procs(procs, spans)
        nvml_env(gpus=1, mig=0, update_ms=100, t0_ns=t0, waveform="constant", base_w=IDLE_W, procs=str(procs),
                 gpm_refresh_ms=0)
        probe = run([fake_nvml], t0, seconds, sensors=["nvml"], nvml_library=str(fake_nvml), nvml_min_period_us=100,
                    proc_root=str(proc_tree(tmp_path / f"proc{seed}", PROCS)))
        a, b = t0 + 1_000_000_000, t0 + int((seconds - 1) * 1e9)
        use, _ = gpu_use_for(probe.use_recorder.use("gpu"), "gpu0", 0)
        (ch,) = [c for c in choose_channels(probe.channels_around(a, b)) if c.domain == "gpu0"]
        windows, k, w, d, totals = _window_use(use, a, b)
        tl, t = Timeline(ch), use.t_ns
        energy = tl.energy(t[windows], t[windows + 1])[0]
        smooth = counter_smoother(tl, t[windows[0]:windows[-1] + 2])
        assert smooth is not None, "a 100 ms counter against 250 ms sweeps is coarse"
        for how, f in (("as read", None), ("smeared alike", smooth)):
            fit, why = fit_domain(use, windows, k, w, d, totals, energy, smooth=f)
            errors[how].append(fit.beta[1] / PROCS[4101][1] - 1)
    print({how: [f"{e:+.2%}" for e in v] for how, v in errors.items()})
    assert all(e < -0.008 for e in errors["as read"]), errors  # the bias, on every seed
    assert all(abs(e) < 0.008 for e in errors["smeared alike"]), errors
