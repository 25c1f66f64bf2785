"""Item 9: what the demo's scale-down buys per training step (same run, interleaved).

The default study must train its nets within ~15 minutes on 2 CPU cores without native bf16
(README, "Demo scale"). This times one AdamW step (forward, MSE, backward, step) of U-Net and
U-Net++ on a batch of 8 windows of 64 bands, float32, for:

* ``paper``: the paper's nets (ResNet-18, smp's default decoder) on the demo's 64 px windows,
  channels-last memory;
* ``paper nchw``: the same in plain (NCHW) memory, as training now runs where there is no bf16;
* ``demo``: the demo's nets (config/config.yaml: ResNet-18-D at half width, decoder widths 64,
  32, 16, 16, 16), NCHW.

The variants alternate step by step (A B C A B C ...) so that other load hits all alike; the
medians and the ratios to ``paper`` are printed. ``--avx2`` re-runs the script with oneDNN and
ATen held to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), a CPU without
AVX-512 and bf16 such as the AMD EPYC a user tried.

Run:  .venv/bin/python benchmarks/bench_demo_scale.py [--avx2] [--threads 1] [--steps 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

DEMO = {
    "encoder_name": "tu-resnet18d",
    "decoder_channels": [64, 32, 16, 16, 16],
    "channels": (32, 64, 128, 256),
    "stem_width": 16,
}


def make(arch: str, demo: bool, channels_last: bool):
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    kw = dict(DEMO) if demo else {"encoder_name": "resnet18"}
    m = smp.create_model(arch, encoder_weights=None, in_channels=64, classes=1, **kw)
    m = m.to(memory_format=torch.channels_last) if channels_last else m
    return m, torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)


def step(model, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    ((model(x) - y) ** 2).mean().backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant and arch")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--avx2", action="store_true", help="hold oneDNN and ATen to AVX2")
    a = ap.parse_args()
    if a.avx2 and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":
        env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
        sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))
    import torch

    torch.set_num_threads(a.threads)
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "native")
    print(f"threads {a.threads}, {a.patch} px, batch 8, float32, CPU ISA held to: {isa}")
    x = torch.randn(8, 64, a.patch, a.patch)
    y = torch.randn(8, 1, a.patch, a.patch)
    xc = x.contiguous(memory_format=torch.channels_last)
    for arch in ("unet", "unetplusplus"):
        variants = {
            "paper": (*make(arch, False, True), xc),
            "paper nchw": (*make(arch, False, False), x),
            "demo": (*make(arch, True, False), x),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(a.steps + 2):
            for name, (model, opt, xb) in variants.items():
                t0 = time.perf_counter()
                step(model, opt, xb, y)
                if i >= 2:  # two warm-up steps each
                    times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["paper"])
        for name, t in times.items():
            med = statistics.median(t)
            params = sum(p.numel() for p in variants[name][0].parameters()) / 1e6
            print(
                f"{arch:13s} {name:11s} {med:6.3f} s/step (min {min(t):.3f}, max {max(t):.3f}),"
                f" {params:5.1f} M parameters, x{med / base:.2f} of paper"
            )


if __name__ == "__main__":
    main()
