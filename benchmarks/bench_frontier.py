"""The accuracy / FLOPs frontier of training-free pruning on the default model.

For each task (full validation sets unless --limit), at each share of the prunable FLOPs kept
(heads and FFN neurons of all layers, at the task's average length), three pipelines, each
evaluated without repair and with every repair:

* ``uniform ap``: today's default: ``ap`` scores, FFN neurons only, the same sparsity in every
  layer, that sparsity set so the model keeps the budget's FLOPs;
* ``ap + budget``: ``ap`` scores, one FLOPs budget spent over heads and neurons of all layers
  (:func:`mtprune.costs.search_mask`, each kind's scores normalised to sum to one);
* ``fisher + budget`` (Kwon et al. 2022, as reimplemented here): Fisher scores, compared as they
  are (as Kwon's search does), the same budget search; with the ``scale`` repair this is Kwon's
  pipeline (mask tuning), less its mask rearrangement.

Rows go to a CSV through ``mtprune sweep``'s machinery (``--out``; a rerun resumes, more
``--trials`` add calibration samplings: trial t reads sample t of the attribution examples and of
the calibration rows). Prints the frontier per task, the mean over the tasks per pipeline and
budget with its spread over trials, the paired difference of the best pipeline against Kwon's,
and the seconds to prune and repair one task; writes the Pareto chart (HTML, PNG).

    python benchmarks/bench_frontier.py --tasks sst2,mrpc,qnli,rte --threads 1 --out results/frontier.csv
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PIPELINES = {
    "uniform ap": dict(method="ap", mode="uniform"),
    "ap + budget": dict(method="ap", mode="budget", normalise="sum"),
    "fisher + budget": dict(method="fisher", mode="budget", normalise="none"),
}
KWON = ("fisher + budget", "scale")


def uniform_sparsity(adapter, task, fraction: float) -> float:
    """The FFN sparsity (same in every layer) whose model keeps ``fraction`` of the prunable FLOPs."""
    from mtprune.costs import average_length, total_cost, unit_costs
    from mtprune.units import layout

    costs = unit_costs(adapter, "flops", average_length(adapter, task))
    _, n_units = layout(adapter.unit_sites())
    total = total_cost(costs, n_units)
    heads, ffn = total_cost(costs, n_units, "heads"), total_cost(costs, n_units, "ffn")
    p = 1.0 - (fraction * total - heads) / ffn
    if not 0.0 <= p <= 1.0:
        raise SystemExit(f"{task.name}: FFN neurons alone cannot reach {fraction:g} of the FLOPs "
                         f"(heads hold {heads / total:.3f})")
    return round(p, 6)


def time_one_task(adapter, task, budget: str, calib: int) -> dict:
    """Seconds to prune and repair one task from scratch (no cache): attribution, search, repair."""
    import tempfile

    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.costs import average_length, search_mask, unit_costs
    from mtprune.repair import RepairSettings, calibration_rows, repair

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, method, norm, how in (("ap + budget + lsq", "ap", "sum", "lsq"),
                                        ("fisher + budget + scale (Kwon)", "fisher", "none", "scale")):
            t0 = time.perf_counter()
            scores, _, _ = attribute_cached(adapter, AttributionSpec(task.name, method=method, examples=256), cache_dir=d)
            t1 = time.perf_counter()
            mask = search_mask(scores, budget, unit_costs(adapter, "flops", average_length(adapter, task)),
                               normalise=norm)
            t2 = time.perf_counter()
            _, report = repair(adapter, mask, calibration_rows(task, calib), task, RepairSettings(how))
            t3 = time.perf_counter()
            out[name] = {"attribution_s": round(t1 - t0, 2), "search_s": round(t2 - t1, 2),
                         "repair_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2), "sites_refit": report.changed}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="sst2,mrpc,qnli,rte")
    ap.add_argument("--budgets", default="0.8,0.7,0.6,0.5,0.4", help="shares of the prunable FLOPs kept")
    ap.add_argument("--pipelines", default=",".join(PIPELINES), help=f"comma-separated: {', '.join(PIPELINES)}")
    ap.add_argument("--repairs", default="none,bias,scale,lsq")
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--trials", type=int, default=1, help="calibration samplings (and attribution samples)")
    ap.add_argument("--limit", type=int, default=None, help="evaluation rows per task (default: all)")
    ap.add_argument("--task-limit", default="", help="per-task evaluation rows, e.g. qnli=2000 (the first rows of "
                                                     "the validation split; overrides --limit for that task)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/frontier.csv")
    ap.add_argument("--no-timing", action="store_true", help="skip the from-scratch timing of one task")
    ap.add_argument("--timing-only", action="store_true", help="only time pruning and repair of each task")
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mtprune.checkpoints import load_adapter
    from mtprune.experiments import EvalSettings, SweepConfig, run_sweep
    from mtprune.tasks import get_task

    adapter = load_adapter(args.model, device=args.device)
    fractions = [float(x) for x in args.budgets.split(",")]
    budgets = tuple(f"flops:{f:g}" for f in fractions)
    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    repairs = tuple(r.strip() for r in args.repairs.split(","))
    limits = {k.strip(): int(v) for k, v in (x.split("=") for x in args.task_limit.split(",") if x.strip())}
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}; model {adapter.display_name}")
    frames, timing = [], {}
    for name in args.tasks.split(","):
        task = get_task(name)
        if not args.timing_only:
            for pipe in pipelines:
                spec = PIPELINES[pipe]
                common = dict(tasks=(task.name,), methods=(spec["method"],), trials=args.trials, sample_trials=True,
                              repairs=repairs, calib=args.calib, examples=(256,))
                if spec["mode"] == "uniform":
                    cfg = SweepConfig(sparsities=tuple([0.0] + [uniform_sparsity(adapter, task, f) for f in fractions]),
                                      kinds="ffn", **common)
                else:
                    cfg = SweepConfig(sparsities=(0.0,), budgets=budgets, kinds="all", normalise=spec["normalise"],
                                      **common)
                t0 = time.perf_counter()
                evals = EvalSettings(limit=limits.get(task.name, args.limit), prune="hard", batch_size=64)
                df = run_sweep(adapter, cfg, evals, out=args.out)
                df["pipeline"] = pipe
                frames.append(df)
                print(f"{task.name} {pipe}: {len(df)} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        if not args.no_timing:
            timing[task.name] = time_one_task(adapter, task, "flops:0.6", args.calib)
            print(f"{task.name} prune + repair from scratch: {json.dumps(timing[task.name])}", flush=True)
    if not frames:
        return 0
    df = pd.concat(frames, ignore_index=True)
    dense = df[df["sparsity"].fillna(-1) == 0].groupby("task")["accuracy"].first()
    pts = df[df["sparsity"].fillna(-1) != 0].copy()
    # the budget a row stands for: its budget, or the budget its uniform sparsity was set for
    uniform = {(t, uniform_sparsity(adapter, get_task(t), f)): f"flops:{f:g}" for t in pts["task"].unique()
               for f in fractions}
    pts["target"] = [b if isinstance(b, str) and b else uniform.get((t, round(s, 6)), "")
                     for t, b, s in zip(pts["task"], pts["budget"], pts["sparsity"])]
    pts["series"] = pts["pipeline"] + " + " + pts["repair"].astype(str)
    per_trial = pts.groupby(["series", "target", "trial", "task"])["accuracy"].mean().unstack("task")
    rows_of = df.groupby("task")["n_eval"].max()
    print("\n## dense accuracy (evaluation rows)\n" + " | ".join(f"{t} {v:.4f} ({int(rows_of[t])})" for t, v in dense.items()))
    for task in df["task"].unique():
        tab = pts[pts.task == task].groupby(["series", "target"])["accuracy"].mean().unstack("target")
        tab = tab[[b for b in budgets if b in tab.columns]]
        print(f"\n## {task} (dense {dense[task]:.4f}): accuracy at each share of the FLOPs kept\n")
        print(tab.round(4).to_string())
    mean = per_trial.mean(axis=1)  # over the tasks, per trial
    summary = mean.groupby(["series", "target"]).agg(["mean", "std", "count"]).reset_index()
    print("\n## mean over the tasks (± standard deviation over trials)\n")
    wide = summary.pivot(index="series", columns="target", values="mean")[[b for b in budgets]]
    print(wide.round(4).to_string())
    # the best pipeline against Kwon's, paired by trial
    kwon = f"{KWON[0]} + {KWON[1]}"
    best = wide.drop(index=kwon, errors="ignore").mean(axis=1).idxmax()
    print(f"\n## {best} against {kwon} (mean over the tasks, paired by trial)\n")
    for b in budgets:
        try:
            d = (mean.xs((best, b), level=("series", "target")) - mean.xs((kwon, b), level=("series", "target")))
        except KeyError:
            continue
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        # the evaluation rows' own noise: the two accuracies' binomial variances, as if the rows were
        # independent samples (a paired test on the same rows would be tighter), per task, averaged
        acc = pts.groupby(["series", "target", "task"])["accuracy"].mean()
        var = [sum(a * (1 - a) / rows_of[t] for a in (acc[(best, b, t)], acc[(kwon, b, t)]))
               for t in acc.xs((best, b), level=("series", "target")).index if (kwon, b, t) in acc.index]
        rows_se = np.sqrt(sum(var)) / len(var) if var else float("nan")
        print(f"{b}: {d.mean():+.4f}" + (f" ± {se:.4f} (SE over {len(d)} trials)" if len(d) > 1 else " (one trial)")
              + f"; evaluation-row noise ± {rows_se:.4f} (SE)")
    if timing:
        print("\n## seconds to prune and repair one task at flops:0.6 (attribution, search, repair)\n")
        print(json.dumps(timing, indent=1))
    from mtprune.plots import frontier_figure, save_figure

    rows = pd.concat([pts, df[df["sparsity"].fillna(-1) == 0]], ignore_index=True)
    fig = frontier_figure(rows, series="series", title="accuracy against the share of prunable FLOPs kept (default model)")
    for w in save_figure(fig, str(Path(args.out).with_suffix("")) + "_frontier", png=not args.no_png):
        print(f"wrote {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
