"""Deployment speed: dense against pruned, in PyTorch and in onnxruntime, side by side in one run.

Models: the dense default model; hard-pruned at 50% of the FFN neurons of every layer; and a
FLOPs-budget mask (``--budget flops:0.6``, heads and neurons of all layers) when one is given.
Each is exported to ONNX (``mtprune.export``), optionally also with onnxruntime's transformer
optimizer (``--optimize``) and int8 dynamic quantisation (``--quantize``). Batch 1 and batch 32,
128 tokens; the runs are interleaved (every model once per round, ``--rounds`` rounds) and the
median is reported. Beside every speedup, the FLOP-ideal one (matmul FLOPs counted by
``torch.utils.flop_counter``, attention's QK^T and AV from the head counts: what
``bench_pruning.py`` and ``--budget flops:`` count), and the ratio measured / ideal.

Goals (issue 12): onnxruntime keeps >= 0.9 of the FLOP-ideal speedup of pruning; the pruned ONNX
model at batch 1 is >= 1.5x faster than dense PyTorch on the 2-core CPU.

    python benchmarks/bench_deploy.py [--threads 2] [--rounds 15] [--budget flops:0.6] [--optimize] [--quantize]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench_pruning import random_scores  # noqa: E402  (the same random masks as the pruning benchmark)


def make_batch(adapter, batch: int, tokens: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, adapter.tokenizer.vocab_size, (batch, tokens), generator=g)
    ids[:, 0] = adapter.tokenizer.cls_token_id or 101
    ids[:, -1] = adapter.tokenizer.sep_token_id or 102
    return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids), "attention_mask": torch.ones_like(ids)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--sparsity", type=float, default=0.5, help="FFN sparsity of the uniform pruned model")
    ap.add_argument("--budget", default="flops:0.6", help="a FLOPs-budget mask too ('' to skip)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads (default: all)")
    ap.add_argument("--optimize", action="store_true", help="also time onnxruntime's optimized graphs")
    ap.add_argument("--quantize", action="store_true", help="also time int8 dynamically quantised graphs")
    ap.add_argument("--json", default=None, help="write the figures to this file")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    from mtprune.checkpoints import load_adapter
    from mtprune.costs import search_mask, unit_costs, average_length
    from mtprune.export import export_onnx
    from mtprune.formats.onnxrt import open_session
    from mtprune.masks import mask_from_scores
    from mtprune.pruning import hard_prune
    from mtprune.tasks import get_task
    from mtprune_dev.flops import count_flops

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    task = get_task(args.task)
    dense = load_adapter(args.model)
    scores = random_scores(dense)  # which units go does not change the speed
    models = {"dense": dense,
              f"ffn{round(100 * args.sparsity)}": hard_prune(dense, mask_from_scores(scores, {"ffn": args.sparsity}))}
    if args.budget:
        costs = unit_costs(dense, "flops", average_length(dense, task))
        models[args.budget.replace(":", "")] = hard_prune(dense, search_mask(scores, args.budget, costs))
    batches = [int(b) for b in args.batches.split(",")]
    print(f"machine: {os.cpu_count()} CPUs, {threads} threads; torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}; {args.tokens} tokens; {args.rounds} interleaved rounds (median)")

    runners = {}  # name -> (kind, model name, callable(batch))
    with tempfile.TemporaryDirectory() as d:
        for name, ad in models.items():
            runners[f"pytorch {name}"] = ("pytorch", name, lambda b, ad=ad: ad.logits(b, task))
            variants = [("onnx", {})]
            if args.optimize:
                variants.append(("onnx optimized", {"optimize": True}))
            if args.quantize:
                variants.append(("onnx int8", {"quantize": "int8"}))
            for kind, kw in variants:
                out = export_onnx(ad, task, Path(d) / f"{name}-{kind.replace(' ', '-')}", evaluate=False, **kw)
                sess = open_session(out, threads=threads)
                inputs = [i.name for i in sess.get_inputs()]
                runners[f"{kind} {name}"] = (kind, name, lambda b, s=sess, n=inputs: s.run(
                    None, {k: b[k].numpy() for k in n}))
        results = {}
        for bs in batches:
            batch = make_batch(dense, bs, args.tokens)
            flops = {name: count_flops(ad, batch, task) for name, ad in models.items()}
            times = {k: [] for k in runners}
            with torch.inference_mode():
                for fn in (r[2] for r in runners.values()):  # warm up
                    fn(batch)
                for _ in range(args.rounds):
                    for k, (_, _, fn) in runners.items():
                        t0 = time.perf_counter()
                        fn(batch)
                        times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            base = med["pytorch dense"]
            print(f"\n## batch {bs} x {args.tokens} tokens (median ms; speedup against dense PyTorch, and "
                  "against the same runtime's dense model, with the FLOP-ideal speedup)\n")
            print("| runtime | model | ms | vs dense PyTorch | vs same-runtime dense | FLOP-ideal | of ideal |")
            print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
            rows = []
            for k, (kind, name, _) in runners.items():
                ideal = flops["dense"] / flops[name]
                same = med[f"{kind} dense"] / med[k]
                rows.append({"runtime": kind, "model": name, "batch": bs, "ms": round(1000 * med[k], 2),
                             "speedup_vs_dense_pytorch": round(base / med[k], 3), "speedup_same_runtime": round(same, 3),
                             "flop_ideal": round(ideal, 3), "of_ideal": round(same / ideal, 3) if name != "dense" else None})
                print(f"| {kind} | {name} | {1000 * med[k]:.1f} | {base / med[k]:.2f}x | {same:.2f}x | {ideal:.2f}x | "
                      + (f"{same / ideal:.2f}" if name != "dense" else "-") + " |")
            results[bs] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
