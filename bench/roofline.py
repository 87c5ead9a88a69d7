"""One training step of the sequential recipe against the machine's matmul speed (the roofline).

    python -m bench.roofline [--scales 1 10 100] [--threads 1] [--steps 20]

Per catalog size (bench/synthetic.py's ×1, ×10, ×100 shapes; its real training windows and
targets): the FLOPs of one training step of the 64x2 SASRec every stage trains (teacher head,
plain SASRec, student: the same network), counted by torch's FlopCounterMode (forward and
backward matmuls and attention), divided by the step's measured time: achieved GFLOP/s, and
that as a fraction of a matmul micro-benchmark on the same machine and threads (the attainable
peak for these shapes). Both softmaxes are measured: the full one over every item and the
regime's sampled one (log-Q, `scaling.negatives` uniform + in-batch). Where the time goes:
torch.profiler's top operators by self time for the sampled step. Tokens/s: non-padding training
positions per second; padding waste: the share of window slots that are padding.

Results: bench/results/roofline.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench import synthetic
from bench.common import save
from distill.nn.sampled import SampledSoftmax
from distill.nn.sasrec import SASRec, windows

BATCH = 32  # the sampled regime's windows a step
NEGATIVES = 1_024
HISTORY = 50


def matmul_peak(threads: int, repeat: int = 20) -> dict:
    """Best GFLOP/s of float32 matmuls shaped like the step's (positions x dim x columns) and a
    square one."""
    torch.set_num_threads(threads)
    shapes = {
        "1600x64x4096": (1600, 64, 4096),
        "1600x256x64": (1600, 256, 64),
        "1024^3": (1024,) * 3,
    }
    out = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        out[name] = round(2 * m * k * n / best / 1e9, 1)
    return out


def sequences(scale: float, folder: Path) -> tuple[list[np.ndarray], int]:
    import polars as pl

    paths = synthetic.generate(scale, folder)
    inter = pl.read_parquet(paths["interactions"]).sort("user_id", "timestamp")
    codes = inter.get_column("item_id").cast(pl.Categorical).to_physical().to_numpy()
    n_items = int(codes.max()) + 1
    users = inter.get_column("user_id").to_numpy()
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    return [s.astype(np.int64) for s in np.split(codes, cuts)], n_items


def step_seconds(model, inputs, targets, sampler, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    g = torch.Generator().manual_seed(0)
    for _ in range(steps + 3):
        idx = torch.randint(len(inputs), (BATCH,), generator=g)
        t0 = time.perf_counter()
        loss = model.loss(inputs[idx], targets[idx], model.item_vectors(), sampler)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[3:]))


def step_flops(model, inputs, targets, sampler) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    idx = torch.arange(BATCH)
    with FlopCounterMode(display=False) as counter:
        loss = model.loss(inputs[idx], targets[idx], model.item_vectors(), sampler)
        loss.backward()
    return int(counter.get_total_flops())


def profile(model, inputs, targets, sampler, top: int = 8) -> list[dict]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(5):
            idx = torch.arange(s * BATCH, (s + 1) * BATCH)
            loss = model.loss(inputs[idx], targets[idx], model.item_vectors(), sampler)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3)} for e in events[:top]]


def one_size(scale: float, threads: int, steps: int, folder: Path) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    seqs, n_items = sequences(scale, folder)
    inputs, targets = (torch.as_tensor(a) for a in windows(seqs, HISTORY, n_items))
    padding = float((targets == -100).float().mean())
    model = SASRec(n_items, dim=64, max_len=HISTORY, n_layers=2, n_heads=2)
    peak = max(matmul_peak(threads).values())
    out = {
        "scale": scale,
        "items": n_items,
        "windows": len(inputs),
        "padding_share": round(padding, 3),
    }
    for name, sampler in (
        ("full", None),
        ("sampled", SampledSoftmax.of_targets(targets, n_items, NEGATIVES)),
    ):
        seconds = step_seconds(model, inputs, targets, sampler, steps)
        flops = step_flops(model, inputs, targets, sampler)
        tokens = BATCH * HISTORY * (1 - padding)
        out[name] = {
            "step_ms": round(seconds * 1e3, 1),
            "gflop_per_step": round(flops / 1e9, 3),
            "gflops": round(flops / seconds / 1e9, 1),
            "roofline_fraction": round(flops / seconds / 1e9 / peak, 3),
            "tokens_per_s": round(tokens / seconds),
            "epoch_s": round(seconds * len(inputs) / BATCH, 1),
        }
    out["sampled"]["profile"] = profile(
        model, inputs, targets, SampledSoftmax.of_targets(targets, n_items, NEGATIVES)
    )
    return out


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 100])
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (a training worker: 1)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per softmax (median)")
    args = parser.parse_args()
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            sizes.append(one_size(scale, args.threads, args.steps, Path(tmp) / f"x{scale:g}"))
            print(sizes[-1], flush=True)
    save(
        "roofline",
        {
            "threads": args.threads,
            "batch_windows": BATCH,
            "negatives": NEGATIVES,
            "matmul_gflops": matmul_peak(args.threads),
            "sizes": sizes,
        },
    )


if __name__ == "__main__":
    main()
