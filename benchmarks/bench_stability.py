"""How far attribution scores can be trusted: the reliability estimated from one draw's fold sums
against the agreement of two independent draws, and what examples chosen by reliability buy.

For every task, method and example count: draws (--seeds, default 0 and 1) of the task's train split
are attributed; *measured* is the Spearman correlation of two draws' scores per layer (mean over
layers, and over the pairs of draws) and the Jaccard of the halves they keep per layer; *estimated*
is what each draw's own fold sums
predict (split-half with Spearman-Brown; the Jaccard through a Gaussian copula, mtprune.reliability),
the mean of the two draws. Small splits (cb: 250 rows) make the two draws share rows: the share is
printed, and their measured agreement is then higher than independent draws would give.

With --accuracy: the default pipeline (flops:0.5 budget + lsq repair) from masks at 256 examples
against masks at --examples auto, on each task's validation split (--eval-limit rows), with
Wilson intervals and the paired McNemar verdict.

    python benchmarks/bench_stability.py --tasks sst2,rte,qnli --methods ap --sizes 64,256,1024
    python benchmarks/bench_stability.py --accuracy --tasks sst2,mrpc
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _measured(a, b) -> tuple[float, float]:
    """Mean over layers of the Spearman correlation, and of the Jaccard of the kept halves."""
    from scipy.stats import spearmanr

    rho, jac = [], []
    for g in a.groups:
        for layer, n in enumerate(a.n_units[g]):
            if n < 3:
                continue
            x, y = a.arrays[g][layer, :n], b.arrays[g][layer, :n]
            rho.append(spearmanr(x, y).statistic)
            k = n // 2
            ka, kb = set(np.argsort(-x)[:k]), set(np.argsort(-y)[:k])
            jac.append(len(ka & kb) / len(ka | kb))
    return float(np.mean(rho)), float(np.mean(jac))


def _estimated(s, group: str) -> tuple[float, float]:
    r = s.reliability()[group]
    return r.spearman, r.jaccard(0.5)


def _one_group(s, group: str):
    """The scores of one group only (measured agreement per kind)."""
    from dataclasses import replace

    return replace(s, arrays={group: s.arrays[group]}, n_units={group: s.n_units[group]},
                   folds={group: s.folds[group]} if s.folds else None)


def stability(adapter, tasks, methods, sizes, batch_size: int, seeds=(0, 1)) -> list[dict]:
    from mtprune.attribution import AttributionSpec, attribute_cached, labelled_rows, sample_for

    rows = []
    for task in tasks:
        for method in methods:
            for n in sizes:
                spec = AttributionSpec(task=task, method=method, examples=n, seed=0)
                have = labelled_rows(spec)
                if n > have:
                    print(f"{task}: {n} examples asked, the split has {have}: skipped", file=sys.stderr)
                    continue
                draws = [attribute_cached(adapter, AttributionSpec(task=task, method=method, examples=n, seed=seed),
                                          batch_size=batch_size)[0] for seed in seeds]
                seconds = float(np.mean([d.seconds for d in draws]))  # computing one draw (its cached halves too)
                keys = [{(r.get("sentence"), r.get("sentence1"), r.get("question"), r.get("premise"),
                          r.get("passage")) for r in sample_for(d.spec)} for d in draws]
                shared = len(keys[0] & keys[1]) / n
                pairs = [(i, j) for i in range(len(draws)) for j in range(i + 1, len(draws))]
                for g in draws[0].groups:
                    both = [_measured(_one_group(draws[i], g), _one_group(draws[j], g)) for i, j in pairs]
                    rho, jac = float(np.mean([b[0] for b in both])), float(np.mean([b[1] for b in both]))
                    est = [_estimated(d, g) for d in draws]
                    rows.append({"task": task, "method": method, "examples": n, "kind": g.split(".")[-1],
                                 "measured_spearman": rho, "estimated_spearman": float(np.mean([e[0] for e in est])),
                                 "measured_jaccard": jac, "estimated_jaccard": float(np.mean([e[1] for e in est])),
                                 "shared_rows": shared, "seconds": seconds, "pairs": len(pairs)})
                    r = rows[-1]
                    print(f"{task:6s} {method:10s} {n:5d} {r['kind']:5s} spearman measured {rho:.3f} estimated "
                          f"{r['estimated_spearman']:.3f} (diff {r['estimated_spearman'] - rho:+.3f}) | jaccard "
                          f"measured {jac:.3f} estimated {r['estimated_jaccard']:.3f} | rows shared {shared:.2f} | "
                          f"{seconds:.1f} s to compute a draw", flush=True)
    return rows


def accuracy(adapter, tasks, eval_limit, target: float, cap: int, batch_size: int, seeds=(0,)) -> list[dict]:
    """flops:0.5 + lsq from masks at 256 examples against --examples auto, on validation rows, for
    each seed's draw of examples (one sampling each); the mean and spread over the samplings."""
    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.evaluation import compare, evaluate
    from mtprune.examples_auto import attribute_auto
    from mtprune.pipeline import plan_calibration, prune

    rows = []
    for task in tasks:
        calib = plan_calibration(task, "lsq", "lsq", 1024)
        for seed in seeds:
            spec = AttributionSpec(task=task, method="ap", examples=256, kinds="all", seed=seed)
            fixed = attribute_cached(adapter, spec, batch_size=batch_size)[0]
            t0 = time.perf_counter()
            auto, _, _, chosen = attribute_auto(adapter, spec, target, cap, batch_size=batch_size)
            auto_seconds = time.perf_counter() - t0
            results = {}
            for name, scores in (("256", fixed), ("auto", auto)):
                done = prune(adapter, task, scores=scores, budget="flops:0.5", repair_with="lsq", calibration=calib)
                results[name] = evaluate(done.adapter, task, limit=eval_limit, batch_size=batch_size)
            cmp = compare(results["256"], results["auto"])
            rows.append({"task": task, "seed": seed, "auto": chosen.describe(), "auto_examples": auto.meta["examples"],
                         "auto_seconds": auto_seconds, "acc_256": results["256"].accuracy,
                         "acc_auto": results["auto"].accuracy, "n": results["auto"].n,
                         "verdict": cmp.verdict, "p_value": cmp.p_value})
            print(f"{task} seed {seed}: 256 examples {results['256'].describe()} | auto ({chosen.describe()}; "
                  f"{auto_seconds:.1f} s) {results['auto'].describe()} | auto vs 256: {cmp.verdict} "
                  f"(p={cmp.p_value:.3f})", flush=True)
        mine = [r for r in rows if r["task"] == task]
        a, b = np.array([r["acc_256"] for r in mine]), np.array([r["acc_auto"] for r in mine])
        print(f"{task}: mean over {len(mine)} samplings: 256 {a.mean():.4f} (sd {a.std(ddof=1) if len(a) > 1 else 0:.4f}), "
              f"auto {b.mean():.4f} (sd {b.std(ddof=1) if len(b) > 1 else 0:.4f}), auto - 256 {b.mean() - a.mean():+.4f}",
              flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--tasks", default="sst2,mrpc,qnli,rte,cb,boolq")
    p.add_argument("--methods", default="ap,fisher,activation,ig")
    p.add_argument("--sizes", default="64,256,1024,4096")
    p.add_argument("--seeds", default="0,1", help="draws per setting; measured = the mean over their pairs")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--accuracy", action="store_true", help="also masks at 256 examples against auto (prune + lsq)")
    p.add_argument("--no-stability", action="store_true")
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--reliability", type=float, default=0.9)
    p.add_argument("--max-examples", type=int, default=4096)
    p.add_argument("--out", default=None, help="also write the rows as CSV")
    args = p.parse_args(argv)
    import pandas as pd
    import torch

    from mtprune.checkpoints import load_adapter

    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = load_adapter(args.model)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows = []
    if not args.no_stability:
        rows = stability(adapter, tasks, args.methods.split(","), [int(x) for x in args.sizes.split(",")],
                         args.batch_size, [int(s) for s in args.seeds.split(",")])
        df = pd.DataFrame(rows)
        if len(df):
            df["diff"] = df.estimated_spearman - df.measured_spearman
            print(f"\n|estimated - measured| Spearman: mean {df['diff'].abs().mean():.3f}, max {df['diff'].abs().max():.3f}, "
                  f"within 0.05 in {(df['diff'].abs() <= 0.05).sum()} of {len(df)} rows")
            if args.out:
                df.to_csv(args.out, index=False)
    if args.accuracy:
        acc = accuracy(adapter, tasks, args.eval_limit, args.reliability, args.max_examples, args.batch_size,
                       [int(x) for x in args.seeds.split(",")])
        if args.out:
            pd.DataFrame(acc).to_csv(args.out.replace(".csv", "") + "-accuracy.csv", index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
