#!/bin/bash
# marks (local, ring, gRPC) and the daemon's intake, two trees interleaved: OLD (a worktree of the
# earlier commit, its extension built: pip wheel, _core*.so copied into OLD/python/greenprobe) and NEW
#   bash benchmarks/ab_marks.sh OLD NEW
PY=$(pwd)/.venv/bin/python
for round in 1 2; do
  for tree in "$1" "$2"; do
    echo "=== round $round: $tree ($(git -C $tree log --oneline -1 | cut -c1-7))"
    PYTHONPATH=$tree/python $PY $tree/benchmarks/bench_mark.py 100000 2>&1 | tail -8
    PYTHONPATH=$tree/python $PY $tree/benchmarks/bench_daemon.py --clients 1 --seconds 10 --rate 0 --transports ring,grpc 2>&1 | tail -6
  done
done
