"""The study's stopping rule (spec.target_rel_ci): a configuration is run again until the 95 %
interval of each energy figure is within the target, or it has max_runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from greenprobe.errors import ConfigError
from greenprobe.study import load_spec
from greenprobe.study.execute import Runner
from greenprobe.study.layout import Layout
from greenprobe.study.plan import Config

IDLE_W = 10.0


def runner(tmp_path, **spec) -> Runner:
    r = Runner.__new__(Runner)  # its rule alone: no workers, no daemon
    r.spec = load_spec(None, runs=3, **spec)
    r.layout = Layout(tmp_path)
    r.probe = SimpleNamespace(baseline=lambda: [{"sensor": "s", "domain": "d", "power_w": IDLE_W, "power_w_se": 0.0}],
                              channel_info=lambda: [{"sensor": "s", "domain": "d", "parent_domain": ""}])
    return r


def write_runs(r: Runner, cfg_id: str, joules: list) -> None:
    """Runs of 10 inferences of 0.1 s in a 2 s window; each run's window holds joules[k] J."""
    for k, e in enumerate(joules):
        path = r.layout.run_row(cfg_id, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"run": k, "session": "0", "domains": "s/d", "inferences": 10,
                                    "time_s_per_inference": 0.1, "window_s": 2.0, "energy_j_window[s/d]": e}))


def per_inference(e: float) -> float:
    """The gross figure of a run (aggregate.run_figures): net over the window, plus idle x its time."""
    return (e - IDLE_W * 2.0) / 10 + IDLE_W * 0.1


def test_a_configuration_is_run_again_while_its_interval_is_wider_than_the_target(tmp_path):
    cfg = Config(runtime="torch", source="torch", provider="native", model="resnet50", batch_size=1)
    r = runner(tmp_path, target_rel_ci=0.02)
    write_runs(r, cfg.id, [50.0, 60.0, 70.0])  # 4, 5, 6 J per inference: +-50 % at 3 runs
    why = r.needs_more(cfg)
    assert why.startswith("energy_j_per_inference +-") and float(why.split("+-")[1].rstrip("%")) > 2
    write_runs(r, cfg.id, [60.0, 60.1, 59.9])  # +-0.4 %
    assert [per_inference(e) for e in (60.0, 60.1, 59.9)] == pytest.approx([5.0, 5.01, 4.99])
    assert r.needs_more(cfg) == ""
    # the rule off, or the most runs reached: no more, however wide
    write_runs(r, cfg.id, [50.0, 60.0, 70.0])
    assert runner(tmp_path).needs_more(cfg) == ""
    write_runs(r, cfg.id, [50.0, 60.0, 70.0, 55.0, 65.0, 52.0, 68.0, 51.0, 69.0])
    assert r.max_runs() == 9 and r.needs_more(cfg) == ""
    assert runner(tmp_path, target_rel_ci=0.02, max_runs=20).needs_more(cfg) != ""


def test_a_resumed_sitting_schedules_the_next_run_the_rule_asks_for(tmp_path):
    import random

    cfg = Config(runtime="torch", source="torch", provider="native", model="resnet50", batch_size=1)
    r = runner(tmp_path, target_rel_ci=0.02)
    r.rng = random.Random(0)
    write_runs(r, cfg.id, [50.0, 60.0, 70.0])
    assert r.schedule([cfg]) == [(cfg, 3)]
    write_runs(r, cfg.id, [60.0, 60.1, 59.9])
    assert r.schedule([cfg]) == []


@pytest.mark.parametrize("kw, match", [({"target_rel_ci": 1.5}, "target_rel_ci"), ({"target_rel_ci": -0.1}, "target_rel_ci"),
                                       ({"max_runs": 2, "runs": 3}, "max_runs")])
def test_a_bad_stopping_rule_is_refused_with_the_fix(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_spec(None, **kw)
    assert e.value.fix
