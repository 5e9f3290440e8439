"""The replay sensor: re-emits a recorded samples.parquet at its original pace."""

from __future__ import annotations

import numpy as np

from . import _core
from .errors import SensorConfigError, SensorNotFound
from .parquet import read_metadata, read_table
from .records import CHANNEL_INFO_FIELDS, with_units
from .store import sample_columns


def open_replay(options: dict):
    path = options.get("path")
    if not path:
        raise SensorConfigError("the replay sensor needs a recorded file", "use replay:path=run1/samples.parquet")
    import os

    if not os.path.exists(path):
        raise SensorNotFound(f"replay file not found: {path}", "record one with `greenprobe record --out DIR`")
    # a damaged or foreign file: one line naming it, not pyarrow's traceback
    meta = read_metadata(path)
    table = read_table(path, ("t_ns", "channel"), "give the samples.parquet of a `greenprobe record --out DIR`")
    t, _, value, ch, _ = sample_columns(table)
    t0 = int(t.min()) if t.size else 0
    tracks, sources = [], set()
    for c in map(with_units, meta["channels"]):
        m = ch == c["channel"]
        if not m.any():
            continue
        order = np.argsort(t[m], kind="stable")
        sources.add(c["sensor"])
        tracks.append({
            # every ChannelInfo field the recording has, by name (one it lacks keeps its default)
            **{k: c.get(k) for k in CHANNEL_INFO_FIELDS},
            "offset_ns": (t[m][order] - t0).tolist(), "energy_j_or_power_w": value[m][order].tolist(),
        })
    if not tracks:
        raise SensorConfigError(f"replay file {path} holds no samples", "record a longer session")
    return _core.open_replay(tracks, ",".join(sorted(sources)))
