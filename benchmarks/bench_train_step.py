"""Item 5: cost of one training step, before/after the training changes (same run, interleaved).

Times an AdamW step (forward, masked MSE, backward, step) of U-Net and U-Net++ (ResNet-18, 64
bands, the demo's 128 px patches, batch 8) in the two set-ups the study has had:

* ``before``: float32, contiguous (NCHW) memory, as training ran until this change;
* ``after``: what ``train.py`` does now: channels-last memory and bf16 autocast where the CPU
  (or GPU) has native bf16 kernels (``training.precision: auto``); float32 elsewhere.

The variants alternate step by step (A B A B ...) so that load from other jobs hits both
alike; the medians and the after/before ratio are printed. Also times a validation pass with
autograd (before) and under ``torch.inference_mode`` on cached batches (after).

Run:  .venv/bin/python benchmarks/bench_train_step.py [--threads 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def make(arch: str, channels_last: bool):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    m = smp.create_model(arch, encoder_name="resnet18", encoder_weights=None, in_channels=64)
    m = m.to(memory_format=torch.channels_last) if channels_last else m
    return m, torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4)


def step(model, opt, x, y, bf16: bool) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        p = model(x)
    ((p.float() - y) ** 2).mean().backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant and arch")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    print(f"threads {a.threads}, patch {a.patch}, batch {a.batch}, native bf16 on CPU: {bf16}")
    x = torch.randn(a.batch, 64, a.patch, a.patch)
    y = torch.randn(a.batch, 1, a.patch, a.patch)
    xc = x.contiguous(memory_format=torch.channels_last)
    for arch in ("unet", "unetplusplus"):
        variants = {
            "before": (*make(arch, False), x, False),
            "after": (*make(arch, True), xc, bf16),
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(a.steps + 1):  # the first round warms up and is dropped
            for name, (m, opt, xx, b) in variants.items():
                t0 = time.perf_counter()
                step(m, opt, xx, y, b)
                if i:
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{arch:13s} train step: before {med['before']:.3f} s, after {med['after']:.3f} s, "
            f"after/before {med['after'] / med['before']:.2f}"
        )
        m, _, _, _ = variants["after"]
        val = {"before": [], "after": []}
        for _ in range(3):
            t0 = time.perf_counter()
            m(xc).sum()  # autograd graph kept, as a plain forward does
            val["before"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                m(xc)
            val["after"].append(time.perf_counter() - t0)
        vb, va = (statistics.median(val[k]) for k in ("before", "after"))
        print(f"{arch:13s} validation batch: before {vb:.3f} s, after {va:.3f} s, {va / vb:.2f}")


if __name__ == "__main__":
    main()
