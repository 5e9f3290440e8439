"""Background writers that turn plain files into RAPL stand-ins, run as a separate process.

    python standin_writer.py CONFIG.json

CONFIG: {"kind": "powercap"|"msr", "t0_ns", "period_ns", "duration_s", "log": PATH, "wave": {...},
         "targets": [...], "load": {"file": PATH, "watts": W} (optional)}.
powercap target: {"path": ".../energy_uj", "scale": 1.0, "max_uj": N, "offset_uj": N,
                  "glitch_file": PATH, "glitch_uj": N (optional: once PATH exists, the counter shows
                  N µJ less from then on, a backwards glitch; the log keeps the true raw value)}
msr target:      {"path": ".../msr", "register": 0x611, "offset_scale": 1, "scale": 1.0,
                  "joules_per_count": 2**-14, "start": N}
power_average target (kind "power_average", an hwmon power<N>_average file):
                 {"path": ".../power1_average", "scale": 1.0, "window_ns": N}: at each tick t the mean
                  power over [t - window_ns, t] in µW (floored), as "%020d\n"; logged as (t_ns, µW, t_written_ns)

At each tick the writer reads CLOCK_MONOTONIC, computes the exact cumulative energy up to that
instant, and writes the raw counter (quantised, wrapped) in one pwrite; so the counter's value is
always the exact energy up to the moment it changed. It logs (t_ns, unwrapped raw, t_written_ns) per target: the value is the exact energy at t_ns and
became visible somewhere before t_written_ns.
"""

import json
import math
import os
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from truth import Load, Wave  # noqa: E402


def act_like_hardware():
    """A sensor keeps its cadence whatever the machine does: ask for a real-time slot (the writer
    sleeps between ticks, so it cannot starve anyone). Where that is not allowed, the tests
    leave out the edges where the writer stalled (helpers.writer_stalls)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (AttributeError, PermissionError, OSError):
        try:
            os.nice(-10)
        except OSError:
            pass


def main(path):
    cfg = json.load(open(path))
    act_like_hardware()
    wave = Wave(**cfg["wave"])
    load = None
    if cfg.get("load"):  # scheduled work on top of the wave (truth.Load)
        import numpy as np

        pairs = np.fromfile(cfg["load"]["file"], dtype="<i8").reshape(-1, 2)
        load = Load(pairs[:, 0], pairs[:, 1], cfg["load"]["watts"])
    targets = cfg["targets"]
    fds = [os.open(t["path"], os.O_WRONLY) for t in targets]
    period = cfg["period_ns"]
    stop_at = time.monotonic_ns() + int(cfg["duration_s"] * 1e9)
    logs = [[] for _ in targets]
    running = [True]
    signal.signal(signal.SIGTERM, lambda *a: running.__setitem__(0, False))
    deadline = time.monotonic_ns()
    while running[0] and time.monotonic_ns() < stop_at:
        t = time.monotonic_ns()
        e = wave.energy_at_ns(t)
        if load is not None:
            e += load.watts * load.on_ns(t) * 1e-9
        for i, tg in enumerate(targets):
            if cfg["kind"] == "power_average":
                w = tg["window_ns"]
                e_w = wave.energy_at_ns(t) - wave.energy_at_ns(t - w)
                raw = math.floor(e_w * tg["scale"] / (w * 1e-9) * 1e6)
                os.pwrite(fds[i], b"%020d\n" % raw, 0)
            elif cfg["kind"] == "powercap":
                raw = tg.get("offset_uj", 0) + math.floor(e * tg["scale"] * 1e6)
                if "glitch_file" in tg and not tg.get("glitched") and os.path.exists(tg["glitch_file"]):
                    tg["glitched"] = time.monotonic_ns()
                shown = (raw - (tg["glitch_uj"] if tg.get("glitched") else 0)) % (tg["max_uj"] + 1)
                os.pwrite(fds[i], b"%020d\n" % shown, 0)
            else:
                raw = tg.get("start", 0) + math.floor(e * tg["scale"] / tg["joules_per_count"])
                shown = raw & 0xFFFFFFFF
                os.pwrite(fds[i], struct.pack("<Q", shown), tg["register"] * tg.get("offset_scale", 1))
            logs[i].append((t, raw, time.monotonic_ns()))
        if len(logs[0]) == 1:
            open(cfg["log"] + ".started", "w").close()
        deadline += period
        now = time.monotonic_ns()
        if deadline > now:
            time.sleep((deadline - now) * 1e-9)
        else:
            deadline = now
    json.dump(logs, open(cfg["log"], "w"))


if __name__ == "__main__":
    main(sys.argv[1])
