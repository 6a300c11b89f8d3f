"""Honest selection of the pruning defaults, and the frontier they reach, on the default model.

Every validation set is split in two seeded halves: the **select** half chooses, the **report**
half (never looked at while choosing) is what the README quotes. For each task, budget (a share of
the prunable FLOPs kept) and sampling (seed s: the s-th draw of the attribution examples and of
the calibration rows), each candidate pipeline prunes, repairs and is evaluated on the whole
validation set once; its per-row predictions are kept (``--out``, JSON lines; a rerun resumes) and
cut into the halves afterwards.

Candidates (``--candidates``):

* ``default``: what ``mtprune prune`` does: ``ap`` scores of 256 examples, one FLOPs budget over
  heads and FFN neurons with each kind's scores normalised to sum to one, ``lsq`` repair on 1,024
  calibration rows read up to 32,768 tokens;
* ``kwon``: Kwon et al. (2022) as reimplemented here (the README's "Kwon" rows): Fisher scores
  compared as they are (``--normalise none``), the same search, the ``scale`` repair (mask tuning);
* one change to the default at a time: ``normalise none``; the repair variants ``pooled-last``,
  ``intermediate``, ``skip-first-attention``; ``all tokens`` (no token cap on calibration); the mask
  nearer the published pipeline's (``fisher 2048 + lsq``: Fisher scores of 2,048 examples compared
  as they are, as Kwon's code scores, with the default's repair); ``rearrange`` (Kwon's mask
  rearrangement on 1,024 labelled rows before the repair).

Each choice (``DIMENSIONS``: the normalisation, the repair variant, the calibration tokens, the mask) goes
to the candidate with the highest mean accuracy on the select halves (over tasks, budgets and
samplings); the damping needs no choosing here: each site's comes from held-out calibration rows.
The report halves then give every candidate's accuracy (mean and standard deviation over
samplings, n rows), the chosen ones against the default, and the default against dense and against
Kwon's pipeline: the paired difference and McNemar's exact test (:func:`mtprune.evaluation.compare`)
for every sampling. The published pipeline's own figures (Kwon's code on this model, issue 19,
sst2, all 872 rows) are printed beside them as the external reference.

    python benchmarks/bench_frontier.py --tasks sst2,mrpc --budgets 0.6,0.5 --samplings 3 --threads 1
    python benchmarks/bench_frontier.py --timing-only --tasks sst2,mrpc,qnli,rte   # seconds to prune + repair
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

from mtprune.rearrange import EXAMPLES as REARRANGE_EXAMPLES  # noqa: E402
from mtprune.repair import CALIB_TOKENS  # noqa: E402

DEFAULT = dict(method="ap", normalise="sum", solver="lsq", variant="standard", tokens=CALIB_TOKENS)
CANDIDATES = {
    "default": DEFAULT,
    "kwon": dict(DEFAULT, method="fisher", normalise="none", solver="scale"),
    "normalise none": dict(DEFAULT, normalise="none"),
    "pooled-last": dict(DEFAULT, variant="pooled-last"),
    "intermediate": dict(DEFAULT, variant="intermediate"),
    "skip-first-attention": dict(DEFAULT, variant="skip-first-attention"),
    "kwon variant": dict(DEFAULT, variant="kwon"),
    "all tokens": dict(DEFAULT, tokens=None),
    # closer to the published pipeline's mask (issue 19: Kwon's mask with mtprune's lsq, 0.888 at 60%)
    "fisher 2048 + lsq": dict(DEFAULT, method="fisher", normalise="none", examples=2048),
    "rearrange": dict(DEFAULT, rearrange=REARRANGE_EXAMPLES),
}
DIMENSIONS = {
    "normalisation": ("default", "normalise none"),
    "repair variant": ("default", "pooled-last", "intermediate", "skip-first-attention", "kwon variant"),
    "calibration tokens": ("default", "all tokens"),
    "mask": ("default", "fisher 2048 + lsq", "rearrange"),
}
# Kwon et al.'s own code (search, rearrangement, mask tuning) on the default model, sst2, all 872
# validation rows, mean of three samplings (issue 19): the external reference
PUBLISHED = {"task": "sst2", "rows": 872, "dense": 0.884, "flops:0.6": 0.888, "flops:0.5": 0.849}


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The select and report rows of a validation set of ``n`` rows: a seeded random half each."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def run_one(adapter, task, rows, budget: str, sampling: int, cfg: dict, args, scores_of) -> dict:
    """Prune, repair and evaluate one candidate; its predictions on every validation row."""
    from mtprune.evaluation import evaluate
    from mtprune.pipeline import flops_kept, prune
    from mtprune.repair import RepairSettings, calibration_rows

    t0 = time.perf_counter()
    scores = scores_of(cfg["method"], sampling, cfg.get("examples"))
    settings = RepairSettings.of(cfg["solver"], cfg["variant"], max_tokens=cfg["tokens"])
    labelled = None  # the rows a rearrangement reads (train rows: never the validation rows evaluated)
    if cfg.get("rearrange"):
        from mtprune.rearrange import rearrange_rows

        labelled = rearrange_rows(task, cfg["rearrange"], seed=sampling)
    done = prune(adapter, task, scores=scores, budget=budget, kinds="all", normalise=cfg["normalise"],
                 repair_with=settings, calibration=calibration_rows(task, args.calib, seed=sampling),
                 rearrange_rows=labelled)
    t1 = time.perf_counter()
    res = evaluate(done.adapter, task, rows=rows, batch_size=64)
    return {"pred": res.predictions.pred.tolist(), "accuracy": res.accuracy, "repair_s": round(t1 - t0, 2),
            "flops_kept": flops_kept(adapter, task, done.mask), "sparsity": done.mask.sparsity,
            "repair": done.report.summary()}


def load_records(path: Path) -> dict:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[r["key"]] = r
    return out


def record_key(model: str, task: str, budget: str, sampling: int, cfg: dict | None, args) -> str:
    # --limit enters the key only for the tasks it cuts (a task with fewer rows reads them all)
    limit = args.limit if args.limit is not None and args.limit < args.task_rows.get(task, args.limit + 1) else None
    return json.dumps([model, task, budget, sampling, cfg, args.examples, args.calib, limit], sort_keys=True)


def collect(adapter, args, tasks, budgets, names) -> pd.DataFrame:
    """Every (task, budget, sampling, candidate) evaluated (or read back from ``--out``): one row
    each, with its predictions."""
    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.evaluation import eval_rows, evaluate

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    have = load_records(out)
    model = adapter.display_name
    args.task_rows = {t.name: len(eval_rows(t)) for t in tasks}
    rows_of = {t.name: eval_rows(t, None, args.limit) for t in tasks}

    def save(key, rec):
        rec["key"] = key
        have[key] = rec
        with out.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    for t in tasks:
        key = record_key(model, t.name, "dense", 0, None, args)
        if key not in have:
            res = evaluate(adapter, t, rows=rows_of[t.name], batch_size=64, cache_logits=True)
            save(key, {"task": t.name, "budget": "dense", "sampling": 0, "candidate": "dense",
                       "pred": res.predictions.pred.tolist(), "accuracy": res.accuracy, "flops_kept": 1.0,
                       "sparsity": 0.0})

    def scores_of(t, method, seed, examples=None):
        spec = AttributionSpec(t.name, method=method, examples=examples or args.examples, seed=seed)
        return attribute_cached(adapter, spec, batch_size=32)[0]

    core = [n for n in names if n in ("default", "kwon")]
    # the default and Kwon's pipeline over every sampling first, then the others, sampling by sampling
    plan = [] if args.report_only else [(core, args.samplings), ([n for n in names if n not in core], args.variant_samplings)]
    for group, samplings in plan:
        for s in range(samplings):
            for t in tasks:
                for b in budgets:
                    for name in group:
                        key = record_key(model, t.name, b, s, CANDIDATES[name], args)
                        if key in have:
                            continue
                        same = _same_as_default(adapter, t, name, s, args)
                        base = record_key(model, t.name, b, s, DEFAULT, args)
                        if same and base in have:  # the token cap does not bind: the default's repair
                            rec = {k: v for k, v in have[base].items() if k != "key"}
                            rec.update(candidate=name, repair_s=0.0, note="the default's: the cap does not bind")
                        else:
                            rec = run_one(adapter, t, rows_of[t.name], b, s, CANDIDATES[name], args,
                                          lambda m, seed, n=None, t=t: scores_of(t, m, seed, n))
                        save(key, {"task": t.name, "budget": b, "sampling": s, "candidate": name, **rec})
                        print(f"{t.name} {b} sampling {s} {name}: accuracy {rec['accuracy']:.4f} "
                              f"({rec['repair_s']:.0f} s to prune and repair)", flush=True)
    wanted = {record_key(model, t.name, "dense", 0, None, args) for t in tasks} | {
        record_key(model, t.name, b, s, CANDIDATES[n], args) for t in tasks for b in budgets for n in names
        for s in range(args.samplings)}
    df = pd.DataFrame([r for k, r in have.items() if k in wanted])
    df["gold"] = [np.array([int(r["label"]) for r in rows_of[t]]) for t in df["task"]]
    return df


def _same_as_default(adapter, task, name: str, sampling: int, args) -> bool:
    """Whether ``name`` differs from the default only by the token cap, and the calibration rows
    fit under the default's cap (then its repair is the default's)."""
    from mtprune.batching import token_lengths
    from mtprune.repair import calibration_rows

    cfg = CANDIDATES[name]
    if {k: v for k, v in cfg.items() if k != "tokens"} != {k: v for k, v in DEFAULT.items() if k != "tokens"}:
        return False
    rows = calibration_rows(task, args.calib, seed=sampling)
    return sum(token_lengths(adapter, task, rows)) <= min(x for x in (cfg["tokens"], DEFAULT["tokens"]) if x)


def add_halves(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Accuracy on the select and the report half of each row's task, and the report half's
    predictions and gold labels."""
    sel, rep, preds, golds = [], [], [], []
    for pred, gold in zip(df["pred"], df["gold"]):
        pred = np.asarray(pred)
        a, b = halves(len(gold), seed)
        sel.append(float((pred[a] == gold[a]).mean()))
        rep.append(float((pred[b] == gold[b]).mean()))
        preds.append(pred[b])
        golds.append(gold[b])
    return df.assign(select=sel, report=rep, report_pred=preds, report_gold=golds)


def paired(df: pd.DataFrame, ref: str, name: str, task: str, budget: str) -> list:
    """``name`` against ``ref`` on the report half, one :func:`mtprune.evaluation.compare` per
    sampling (dense: its one evaluation)."""
    from mtprune.evaluation import EvalResult, Predictions, compare

    def result(row):
        pred, gold = row["report_pred"], row["report_gold"]
        return EvalResult(task, "validation (report half)", len(gold), float((pred == gold).mean()),
                          {"accuracy": float((pred == gold).mean())},
                          predictions=Predictions(gold, pred, np.zeros((len(gold), 1))))

    base = df[(df.task == task) & (df.candidate == ref)]
    out = []
    for _, row in df[(df.task == task) & (df.candidate == name) & (df.budget == budget)].iterrows():
        other = base if ref == "dense" else base[(base.budget == budget) & (base.sampling == row["sampling"])]
        if not other.empty:
            out.append(compare(result(other.iloc[0]), result(row)))
    return out


def _cell(v: pd.Series) -> str:
    if v.empty:
        return ""
    sd = f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else ""
    return f"{v.mean():.4f}{sd} ({len(v)})"


def report(df: pd.DataFrame, budgets, names, seed: int) -> None:
    df = add_halves(df, seed)
    tasks = list(dict.fromkeys(df["task"]))
    n_rows = {t: len(df[df.task == t]["gold"].iloc[0]) for t in tasks}
    print("\n## evaluation rows: " + "; ".join(f"{t} {n} validation rows, {n - n // 2} in the report half"
                                               for t, n in n_rows.items()))
    dense = df[df.candidate == "dense"].set_index("task")
    pts = df[df.candidate != "dense"]
    print("\n## accuracy on the report halves: mean ± standard deviation over samplings (samplings)\n")
    table = [{"candidate": n, **{f"{t} {b}": _cell(pts[(pts.candidate == n) & (pts.task == t) & (pts.budget == b)]["report"])
                                 for t in tasks for b in budgets}} for n in names]
    table.append({"candidate": "dense", **{f"{t} {b}": f"{dense.loc[t, 'report']:.4f}" for t in tasks for b in budgets}})
    print(pd.DataFrame(table).set_index("candidate").to_string())
    if len(tasks) > 1:
        mean_of_tasks(pts, dense, tasks, budgets, names)
    print("\n## choices made on the select halves (means over the task x budget x sampling cells every "
          "candidate of the choice has), and the same candidates on the report halves\n")
    for dim, group in DIMENSIONS.items():
        group = [g for g in group if g in names]
        if len(group) < 2 or "default" not in group:
            continue
        sub = pts[pts.candidate.isin(group)].set_index(["task", "budget", "sampling"])
        cells = sub.groupby(level=[0, 1, 2])["candidate"].nunique()
        cells = cells[cells == len(group)].index
        if not len(cells):
            continue
        sub = sub.loc[cells]
        means = sub.groupby("candidate")[["select", "report"]].mean()
        best = means["select"].idxmax() if means["select"].max() > means.loc["default", "select"] else "default"
        print(f"{dim} ({len(cells)} cells): " + "; ".join(
            f"{c} select {means.loc[c, 'select']:.4f}, report {means.loc[c, 'report']:.4f}" for c in group))
        line = f"  chosen on the select halves: {best}"
        for c in group:
            if c != "default":
                d = sub[sub.candidate == c]["report"] - sub[sub.candidate == "default"]["report"]
                line += (f"; {c} - default on the report halves {d.mean():+.4f}"
                         + (f" ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} (SE over {len(d)} cells)" if len(d) > 1 else ""))
        print(line)
    print("\n## on the report halves: the paired difference per sampling [its 95% interval], McNemar's exact p\n")
    for t in tasks:
        for b in budgets:
            for name, ref in (("default", "dense"), ("default", "kwon"), ("kwon", "dense")):
                if name not in names or (ref != "dense" and ref not in names):
                    continue
                got = paired(df, ref, name, t, b)
                if got:
                    each = ", ".join(f"{c.difference:+.4f} [{c.difference_interval[0]:+.3f}, "
                                     f"{c.difference_interval[1]:+.3f}] (p={c.p_value:.2g})" for c in got)
                    print(f"{t} {b} {name} - {ref}: mean {np.mean([c.difference for c in got]):+.4f}; {each}; "
                          f"n={got[0].n}")
    if "sst2" in tasks and "default" in names:
        print(f"\n## the external reference: Kwon et al.'s code on this model ({PUBLISHED['task']}, all "
              f"{PUBLISHED['rows']} validation rows, mean of three samplings): dense {PUBLISHED['dense']}, "
              + ", ".join(f"{b} {PUBLISHED[b]}" for b in budgets if b in PUBLISHED))
        for b in budgets:
            v = pts[(pts.candidate == "default") & (pts.task == "sst2") & (pts.budget == b)]
            if len(v):
                print(f"sst2 {b}: the default on all rows {v['accuracy'].mean():.4f}, on the report half "
                      f"{v['report'].mean():.4f} ({len(v)} samplings); dense on all rows "
                      f"{dense.loc['sst2', 'accuracy']:.4f}")


def mean_of_tasks(pts: pd.DataFrame, dense: pd.DataFrame, tasks, budgets, names) -> None:
    """The report halves' accuracy averaged over the tasks (each task's mean over its samplings),
    per budget; and the default against Kwon's pipeline over the tasks together: per sampling the
    mean over tasks of the difference, and McNemar's exact test on every task's report rows pooled
    (the rows are independent examples; a task with more rows weighs more there)."""
    from mtprune.evaluation import mcnemar

    print(f"\n## mean of {', '.join(tasks)} on the report halves (each task: its mean over samplings)\n")
    rows = []
    for n in [n for n in ("default", "kwon") if n in names]:
        row = {"candidate": n}
        for b in budgets:
            per = [pts[(pts.candidate == n) & (pts.task == t) & (pts.budget == b)]["report"].mean() for t in tasks]
            row[b] = f"{np.mean(per):.4f}" if not np.isnan(per).any() else ""
        rows.append(row)
    rows.append({"candidate": "dense", **{b: f"{np.mean([dense.loc[t, 'report'] for t in tasks]):.4f}" for b in budgets}})
    print(pd.DataFrame(rows).set_index("candidate").to_string())
    if not {"default", "kwon"} <= set(names):
        return
    for b in budgets:
        diffs, lines = [], []
        samplings = sorted(set(pts[(pts.budget == b)]["sampling"]))
        for s_ in samplings:
            got = {n: pts[(pts.candidate == n) & (pts.budget == b) & (pts.sampling == s_)].set_index("task")
                   for n in ("default", "kwon")}
            if not all(set(tasks) <= set(g.index) for g in got.values()):
                continue
            d = np.mean([got["default"].loc[t, "report"] - got["kwon"].loc[t, "report"] for t in tasks])
            a_only = b_only = 0
            for t in tasks:
                gold = got["default"].loc[t, "report_gold"]
                ca = got["kwon"].loc[t, "report_pred"] == gold
                cb = got["default"].loc[t, "report_pred"] == gold
                a_only += int((ca & ~cb).sum())
                b_only += int((cb & ~ca).sum())
            diffs.append(d)
            lines.append(f"sampling {s_}: {d:+.4f} (pooled McNemar p={mcnemar(a_only, b_only):.2g}, "
                         f"default right alone {b_only}, Kwon right alone {a_only})")
        if diffs:
            sd = f" ± {np.std(diffs, ddof=1):.4f} sd" if len(diffs) > 1 else ""
            print(f"{b} default - kwon, mean of the tasks: {np.mean(diffs):+.4f}{sd} over {len(diffs)} samplings; "
                  + "; ".join(lines))


def time_one_task(adapter, task, budget: str, calib: int, pipelines) -> dict:
    """Seconds to prune and repair one task from scratch (no score cache): attribution, search, repair
    (wall clock), and the CPU seconds of it all (``cpu_s``: what a loaded machine does not inflate)."""
    import tempfile

    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.pipeline import choose_mask
    from mtprune.repair import RepairSettings, calibration_rows, repair

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in pipelines:
            cfg = CANDIDATES[name]
            t0, c0 = time.perf_counter(), time.process_time()
            spec = AttributionSpec(task.name, method=cfg["method"], examples=256)
            scores, _, _ = attribute_cached(adapter, spec, cache_dir=d)
            t1 = time.perf_counter()
            mask = choose_mask(adapter, task, scores, budget=budget, kinds="all", normalise=cfg["normalise"])
            t2 = time.perf_counter()
            settings = RepairSettings.of(cfg["solver"], cfg["variant"], max_tokens=cfg["tokens"])
            _, report = repair(adapter, mask, calibration_rows(task, calib), task, settings)
            t3 = time.perf_counter()
            out[name] = {"attribution_s": round(t1 - t0, 2), "search_s": round(t2 - t1, 2),
                         "repair_s": round(t3 - t2, 2), "total_s": round(t3 - t0, 2),
                         "cpu_s": round(time.process_time() - c0, 2),
                         "calibration_rows": report.calibration_rows, "tokens": report.tokens,
                         "sites_refit": report.changed}
    return out


def chart(df: pd.DataFrame, seed: int, path: str, png: bool) -> None:
    from mtprune.plots import frontier_figure, save_figure

    d = add_halves(df, seed)
    rows = d.assign(accuracy=d["report"], series=d["candidate"],
                    budget=[b if b != "dense" else "" for b in d["budget"]])
    fig = frontier_figure(rows, series="series", title="accuracy on the report halves against the share of "
                                                       "prunable FLOPs kept (default model)")
    for w in save_figure(fig, path, png=png):
        print(f"wrote {w}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tasks", default="sst2,mrpc")
    ap.add_argument("--budgets", default="0.6,0.5", help="shares of the prunable FLOPs kept")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help=f"comma-separated: {', '.join(CANDIDATES)}")
    ap.add_argument("--samplings", type=int, default=3, help="samplings of the default and Kwon's pipeline")
    ap.add_argument("--variant-samplings", type=int, default=None,
                    help="samplings of the other candidates (default: --samplings)")
    ap.add_argument("--split-seed", type=int, default=0, help="the seed of the select / report halves")
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--calib", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=None, help="the first N validation rows of a task that has more (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/frontier_select.jsonl")
    ap.add_argument("--report-only", action="store_true", help="report what --out holds; compute nothing new")
    ap.add_argument("--timing-only", action="store_true", help="only time pruning and repair of each task")
    ap.add_argument("--timing", default="", help="also time these candidates from scratch (comma-separated)")
    ap.add_argument("--no-png", action="store_true")
    args = ap.parse_args(argv)
    if args.variant_samplings is None:
        args.variant_samplings = args.samplings

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from mtprune.checkpoints import load_adapter
    from mtprune.tasks import get_task

    adapter = load_adapter(args.model, device=args.device)
    tasks = [get_task(t) for t in args.tasks.split(",")]
    budgets = [f"flops:{float(x):g}" for x in args.budgets.split(",")]
    names = [n.strip() for n in args.candidates.split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}: {', '.join(CANDIDATES)}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {args.device}; model {adapter.display_name}")
    timed = [n.strip() for n in (args.timing or ("default" if args.timing_only else "")).split(",") if n.strip()]
    if timed:
        timing = {t.name: time_one_task(adapter, t, budgets[-1], args.calib, timed) for t in tasks}
        print(f"\n## seconds to prune and repair one task from scratch at {budgets[-1]}\n")
        print(json.dumps(timing, indent=1))
    if args.timing_only:
        return 0
    df = collect(adapter, args, tasks, budgets, names)
    report(df, budgets, names, args.split_seed)
    chart(df, args.split_seed, str(Path(args.out).with_suffix("")) + "_frontier", png=not args.no_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
