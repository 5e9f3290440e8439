"""Why PyTorch is slow on CPU in the study: the same Hugging Face models, plain loops, variants side by side.

    .venv/bin/python benchmarks/bench_torch_cpu.py [--image-size 96] [--reps 20]

Variants: the study's model as built (eager, NCHW); TF-style padding off (MobileNetV2's default adds
explicit pads); channels_last memory format (oneDNN's preferred layout for convolutions); and the
study's call pattern (a random idle gap of up to one call before each call, as phase dithering
does). Milliseconds per call, median of --reps after 5 warm-up calls, batch 1 and 64.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def timed(fn, reps: int, gaps: bool) -> float:
    for _ in range(5):
        fn()
    one = []
    rng = np.random.default_rng(0)
    last = 0.0
    for _ in range(reps):
        if gaps and last:
            time.sleep(rng.uniform(0, last))
        t = time.perf_counter()
        fn()
        last = time.perf_counter() - t
        one.append(last)
    return statistics.median(one) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    import torch
    import transformers as tr

    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, image {a.image_size} px\n")
    print("| model | batch | as built (ms) | with dithering gaps | tf_padding off | channels_last |")
    print("|---|---|---|---|---|---|")
    models = {
        "mobilenet_v2": lambda **kw: tr.MobileNetV2ForImageClassification(tr.MobileNetV2Config(num_labels=1000, **kw)),
        "resnet50": lambda **kw: tr.ResNetForImageClassification(tr.ResNetConfig(num_labels=1000)),
    }
    for name, make in models.items():
        m = make().eval()
        for b in (1, 64):
            reps = a.reps if b == 1 else max(3, a.reps // 6)
            x = torch.randn(b, 3, a.image_size, a.image_size)
            base = timed(lambda: m(pixel_values=x), reps, False)
            gapped = timed(lambda: m(pixel_values=x), reps, True)
            if name == "mobilenet_v2":
                m2 = make(tf_padding=False).eval()
                nopad = f"{timed(lambda: m2(pixel_values=x), reps, False):.1f}"
            else:
                nopad = "-"
            mc = make().eval().to(memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)
            cl = timed(lambda: mc(pixel_values=xc), reps, False)
            print(f"| {name} | {b} | {base:.1f} | {gapped:.1f} | {nopad} | {cl:.1f} |")


if __name__ == "__main__":
    main()
