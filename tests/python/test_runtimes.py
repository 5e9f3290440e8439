"""Runtime adapters: every model in every runtime (parameter counts at full size; inference, shapes
and ONNX-vs-native agreement on tiny configurations), in each runtime's own environment.

Set GREENPROBE_REQUIRE_RUNTIMES=1 (scripts/test.sh does) to fail instead of skip when a runtime's
environment is missing.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from greenprobe.models import MODELS, make_input
from greenprobe.runtimes import ADAPTERS, Worker, WorkerError, probe_environment

NATIVE = ["torch", "tensorflow", "mxnet"]
REQUIRE = os.environ.get("GREENPROBE_REQUIRE_RUNTIMES") == "1"
#: ONNX Runtime vs the source framework, same float32 input: max |difference| / max |reference|
AGREEMENT_RTOL = 1e-4
TINY = dict(size="tiny", image_size=64, seq_len=16, batch_size=2)


def _need(runtime):
    env = probe_environment(runtime)
    if not env["installed"]:
        if REQUIRE:
            pytest.fail(f"{runtime} is not installed in {env['python']}: {env['reason']} (fix: {env['fix']})")
        pytest.skip(f"{runtime} not installed: {env['reason']}")


@pytest.fixture(scope="module")
def workers():
    started = {}

    def get(runtime):
        if runtime not in started:
            _need(runtime)
            started[runtime] = Worker(runtime)
        return started[runtime]

    yield get
    for w in started.values():
        w.close()


@pytest.mark.parametrize("runtime", list(ADAPTERS))
def test_describe(workers, runtime):
    d = workers(runtime).describe()
    assert d["runtime"] == runtime and d["version"] and "cpu" in d["devices"]
    for p in d["providers"]:  # every provider listed either runs here or says why not
        assert p["available"] or p["reason"], p


def test_onnxruntime_never_passes_off_cpu_as_cuda(workers):
    d = workers("onnxruntime").describe()
    status = {p["name"]: p for p in d["providers"]}
    assert status["cpu"]["available"]
    cuda = status.get("cuda")
    if cuda is not None and not cuda["available"]:
        with pytest.raises(WorkerError) as e:
            workers("onnxruntime").build("resnet50", onnx_path="/nonexistent.onnx", provider="cuda")
        assert e.value.unavailable and "CUDAExecutionProvider" in e.value.message


@pytest.mark.parametrize("runtime", NATIVE)
@pytest.mark.parametrize("model", list(MODELS))
def test_full_size_parameter_counts(workers, runtime, model):
    w = workers(runtime)
    w.build(model, size="full", batch_size=1, image_size=224, seq_len=128)
    params = w.params()
    nominal = MODELS[model].nominal_params
    assert abs(params - nominal) / nominal < 0.03, f"{runtime} {model}: {params:,} parameters vs {nominal:,}"
    w.call("release")


@pytest.mark.parametrize("runtime", NATIVE)
@pytest.mark.parametrize("model", list(MODELS))
def test_tiny_inference_and_onnx_agreement(workers, runtime, model, tmp_path):
    w = workers(runtime)
    w.build(model, **TINY)
    # one timed inference on the sampler's clock
    before = time.monotonic_ns()
    (start, end), = w.run(n=1)
    assert before <= start < end <= time.monotonic_ns()
    # native output for a known input
    batch = make_input(model, 2, image_size=64, seq_len=16, seed=7)
    np.savez(tmp_path / "in.npz", **batch)
    shape = w.output(str(tmp_path / "in.npz"), str(tmp_path / "native.npy"))["shape"]
    if MODELS[model].kind == "text":
        assert shape == [2, 16, 128]  # sequence output of the tiny BERT (hidden 128)
    else:
        assert len(shape) == 2 and shape[0] == 2
    # ONNX: exported by the framework's own exporter, checked, run in ONNX Runtime on the CPU
    onnx_path = str(tmp_path / "model.onnx")
    w.export_onnx(onnx_path)
    ort = workers("onnxruntime")
    built = ort.build(model, size="tiny", onnx_path=onnx_path, provider="cpu", batch_size=2, image_size=64, seq_len=16)
    assert built["provider"] == "CPUExecutionProvider"
    ort.output(str(tmp_path / "in.npz"), str(tmp_path / "onnx.npy"))
    ref, got = np.load(tmp_path / "native.npy"), np.load(tmp_path / "onnx.npy")
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    assert scale > 1e-20, "degenerate reference output"
    rel = float(np.abs(got - ref).max()) / scale
    assert rel <= AGREEMENT_RTOL, f"{runtime} {model}: ONNX Runtime differs by {rel:.2e} of the output's scale"
    w.call("release")
    ort.call("release")


WEIGHT_FILES = {"torch": "checkpoint", "tensorflow": "model.weights.h5", "mxnet": "model.params"}


@pytest.mark.parametrize("runtime", NATIVE)
def test_local_weights_load_back(workers, runtime, tmp_path):
    """The path for users who have weights: save a model's weights, build from them, same outputs."""
    w = workers(runtime)
    batch = make_input("mobilenet_v2", 1, image_size=64, seed=3)
    np.savez(tmp_path / "in.npz", **batch)
    w.build("mobilenet_v2", seed=1, **TINY)
    w.output(str(tmp_path / "in.npz"), str(tmp_path / "saved.npy"))
    path = str(tmp_path / WEIGHT_FILES[runtime])
    w.call("save_weights", path=path)
    w.build("mobilenet_v2", seed=0, **TINY)  # other random weights give other outputs...
    w.output(str(tmp_path / "in.npz"), str(tmp_path / "other.npy"))
    w.build("mobilenet_v2", seed=0, weights=path, **TINY)  # ...unless the saved ones are loaded
    w.output(str(tmp_path / "in.npz"), str(tmp_path / "loaded.npy"))
    saved, other, loaded = (np.load(tmp_path / f"{n}.npy") for n in ("saved", "other", "loaded"))
    scale = float(np.abs(saved).max())
    assert float(np.abs(saved - other).max()) > 1e-2 * scale, "different seeds must give different outputs"
    assert float(np.abs(loaded - saved).max()) <= 1e-6 * scale
    w.call("release")


def test_worker_reports_errors_with_their_fix(workers):
    w = workers("torch")
    with pytest.raises(WorkerError) as e:
        w.build("resnet51")
    assert "unknown model" in e.value.message
    with pytest.raises(WorkerError) as e:
        w.build("resnet50", size="tiny", device="cuda:0")
    if e.value.unavailable:
        assert "CUDA" in e.value.message and e.value.fix


def test_make_input_layouts():
    img = make_input("resnet50", 3, image_size=32)
    assert img["pixels"].shape == (3, 3, 32, 32) and img["pixels"].dtype == np.float32
    txt = make_input("bert-base-uncased", 2, seq_len=8)
    assert txt["input_ids"].shape == (2, 8) and (txt["input_ids"][:, 0] == 101).all()
    with pytest.raises(ValueError):
        make_input("gpt", 1)


@pytest.mark.parametrize("runtime", ["torch", "mxnet"])  # the main environment, and MXNet's own
def test_worker_slots_and_marks_through_the_daemon(runtime, tmp_path):
    """A worker keeps several models built side by side (slots; batch sizes share one model) and
    marks every inference through the daemon it was given, all at the daemon when run returns."""
    from greenprobe import Probe
    from greenprobe.daemon import Daemon

    _need(runtime)
    probe = Probe(sensors="synthetic:waveform=constant;base_w=10").start()
    daemon = Daemon(probe, socket_path=tmp_path / "d.sock").start()
    try:
        with Worker(runtime, env={"GREENPROBE_DAEMON": daemon.addresses[0]}) as w:
            a = w.build("mobilenet_v2", slot="a", **dict(TINY, batch_size=1))
            b = w.build("mobilenet_v2", slot="b", **TINY)
            c = w.build("resnet50", slot="c", **TINY)
            assert not a["shared"] and b["shared"] and not c["shared"]
            runs = {}
            for slot in ("a", "c", "b"):
                runs[slot] = w.run(3, slot=slot, mark={"label": "inference", "attrs": {"slot": slot}})
            w.release("a")
            assert len(w.run(1, slot="b")) == 1  # b still holds the shared model
            with pytest.raises(WorkerError, match="no model built in slot 'a'"):
                w.run(1, slot="a")
            pid = w.proc.pid
        marks = [m for m in probe.marks() if m[0] == "inference"]
        assert len(marks) == 9 and all(m[4]["pid"] == pid for m in marks)
        for slot, ivs in runs.items():
            mine = sorted((m for m in marks if m[4]["slot"] == slot), key=lambda m: m[4]["i"])
            assert [m[4]["i"] for m in mine] == [0, 1, 2]
            for m, (s, e) in zip(mine, ivs):  # the mark encloses the timed inference, by nanoseconds
                assert m[1] <= s < e <= m[2] and (s - m[1]) + (m[2] - e) < 5_000_000
    finally:
        daemon.stop()
        probe.stop()
