"""Pruning speed benchmark: the hard-pruned default model (50% FFN neurons per layer) against the
dense one on the CPU, batch 32 x 128 tokens.

Prints the measured latency speedup (median of interleaved runs), the FLOP-ideal speedup (matmul
FLOPs: every Linear, the pooler and the task head counted by ``torch.utils.flop_counter``, plus
attention's QK^T and AV from the head counts), their ratio (the target is >= 0.8), and the bytes on disk of both models,
saved the same way and in the same dtype.

    python benchmarks/bench_pruning.py [--model default] [--sparsity 0.5] [--runs 15] [--json out.json]

Which units go does not change the speed, so the mask comes from seeded random scores (the same
layout attribution produces); ``--method ap`` scores with attribution instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtprune.masks import mask_from_scores  # noqa: E402
from mtprune.checkpoints import load_adapter, save_model, source_dtype  # noqa: E402
from mtprune_dev.flops import attention_flops, count_flops  # noqa: E402  (torch's FLOP counter)
from mtprune.pruning import count_parameters, hard_prune  # noqa: E402
from mtprune.tasks import get_task  # noqa: E402


def random_scores(adapter, seed=0):
    n = {}
    for s in adapter.unit_sites():
        n.setdefault(s.group, []).append(s.n_units)
    rng = np.random.default_rng(seed)
    return {"arrays": {g: rng.random((len(v), max(v))).astype(np.float32) for g, v in n.items()}, "n_units": n}


def make_batch(adapter, batch: int, tokens: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = adapter.tokenizer.vocab_size
    ids = torch.randint(1000, vocab, (batch, tokens), generator=g)
    ids[:, 0] = adapter.tokenizer.cls_token_id or 101
    ids[:, -1] = adapter.tokenizer.sep_token_id or 102
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}


def time_once(adapter, batch, task) -> float:
    with torch.inference_mode():
        t0 = time.perf_counter()
        adapter.logits(batch, task)
        return time.perf_counter() - t0


def dir_bytes(path: Path) -> dict:
    files = {f.name: f.stat().st_size for f in path.iterdir() if f.is_file()}
    return {"model.safetensors": files.get("model.safetensors", 0), "all files": sum(files.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--kinds", "--units", dest="kinds", default="ffn", choices=("ffn", "heads", "all"))
    ap.add_argument("--scope", default="layer", choices=("layer", "global"))
    ap.add_argument("--method", default="random", help="random (seeded scores) or an attribution method")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=15, help="timed runs per model (interleaved)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--check", action="store_true", help="exit 1 when speed ratio < 0.8")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    task = get_task(args.task)
    dense = load_adapter(args.model, device="cpu")
    if args.method == "random":
        scores = random_scores(dense)
    else:
        from mtprune.attribution import AttributionSpec, attribute_cached

        scores, _, _ = attribute_cached(dense, AttributionSpec(task=task.name, method=args.method))
    mask = mask_from_scores(scores, args.sparsity, scope=args.scope, kinds=args.kinds)
    t0 = time.perf_counter()
    pruned = hard_prune(dense, mask)
    prune_s = time.perf_counter() - t0
    batch = make_batch(dense, args.batch, args.tokens)

    with torch.inference_mode():
        diff = (dense.logits(batch, task) - pruned.logits(batch, task)).abs().max().item()
        from mtprune.pruning import soft_prune

        with soft_prune(dense, mask):
            soft = dense.logits(batch, task)
        hard_vs_soft = (pruned.logits(batch, task) - soft).abs().max().item()

    f_dense, f_pruned = count_flops(dense, batch, task), count_flops(pruned, batch, task)
    a_dense, a_pruned = attention_flops(dense, batch), attention_flops(pruned, batch)
    for _ in range(args.warmup):
        time_once(dense, batch, task)
        time_once(pruned, batch, task)
    td, tp = [], []
    for i in range(args.runs):  # interleaved, alternating which goes first
        pair = [(dense, td), (pruned, tp)] if i % 2 == 0 else [(pruned, tp), (dense, td)]
        for a, acc in pair:
            acc.append(time_once(a, batch, task))
    med_d, med_p = statistics.median(td), statistics.median(tp)
    speedup = med_d / med_p
    ideal = f_dense / f_pruned
    ratio = speedup / ideal

    dtype = source_dtype(dense) or "float32"
    with tempfile.TemporaryDirectory() as d:
        dd = save_model(dense, Path(d) / "dense", dtype=dtype)
        pd = save_model(pruned, Path(d) / "pruned", mask, dtype=dtype)
        b_dense, b_pruned = dir_bytes(dd), dir_bytes(pd)
    p_dense, p_pruned = dense.num_parameters(), pruned.num_parameters()
    res = {
        "model": dense.source,
        "mask": {"sparsity": args.sparsity, "kinds": args.kinds, "scope": args.scope, "method": args.method},
        "batch": [args.batch, args.tokens],
        "threads": torch.get_num_threads(),
        "runs": args.runs,
        "latency_s": {"dense_median": med_d, "pruned_median": med_p, "dense_all": td, "pruned_all": tp},
        "speedup_measured": speedup,
        "matmul_gflops": {"dense": f_dense / 1e9, "pruned": f_pruned / 1e9,
                          "attention_dense": a_dense / 1e9, "attention_pruned": a_pruned / 1e9},
        "speedup_flop_ideal": ideal,
        "ratio": ratio,
        "parameters": {"dense": p_dense, "pruned": p_pruned, "expected": count_parameters(dense, mask)},
        "bytes": {"dtype": dtype, "dense": b_dense, "pruned": b_pruned},
        "weights_bytes_ratio": b_pruned["model.safetensors"] / b_dense["model.safetensors"],
        "parameter_ratio": p_pruned / p_dense,
        "hard_vs_soft_max_abs_diff": hard_vs_soft,
        "dense_vs_pruned_max_abs_diff": diff,
        "hard_prune_seconds": prune_s,
    }
    print(f"model {dense.display_name}: {args.kinds} sparsity {args.sparsity} ({args.scope}), "
          f"batch {args.batch} x {args.tokens} tokens, {res['threads']} threads, {args.runs} runs")
    print(f"latency (median)   dense {med_d * 1e3:8.1f} ms   pruned {med_p * 1e3:8.1f} ms")
    print(f"matmul FLOPs       dense {f_dense / 1e9:8.2f} G    pruned {f_pruned / 1e9:8.2f} G   "
          f"(attention QK/AV {a_dense / 1e9:.2f} G / {a_pruned / 1e9:.2f} G of these)")
    print(f"speedup measured {speedup:.3f}x   FLOP-ideal {ideal:.3f}x   ratio {ratio:.2f} "
          f"({'>= 0.8: ok' if ratio >= 0.8 else 'BELOW 0.8'})")
    print(f"parameters         dense {p_dense:,}   pruned {p_pruned:,}   ratio {res['parameter_ratio']:.3f}")
    print(f"bytes on disk ({dtype}) model.safetensors dense {b_dense['model.safetensors']:,}   pruned "
          f"{b_pruned['model.safetensors']:,}   ratio {res['weights_bytes_ratio']:.3f}; all files "
          f"{b_dense['all files']:,} -> {b_pruned['all files']:,}")
    print(f"hard vs soft logits: max |diff| {hard_vs_soft:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 1 if args.check and ratio < 0.8 else 0


if __name__ == "__main__":
    sys.exit(main())
