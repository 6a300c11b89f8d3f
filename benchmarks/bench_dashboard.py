"""Benchmark: the dashboard's server time on the default model, for two things a user does often.

    python benchmarks/bench_dashboard.py [--part all|slider|eval] [--moves 30] [--examples 16]
        [--budget-ms 150] [--eval-limit N] [--eval-sessions 3] [--eval-budget-s 3] [--json]

Runs the app under streamlit.testing's AppTest with the default model: computes the scores once
(into a temporary MTPRUNE_CACHE) and opens "Prune and evaluate".

**Slider** (``--part slider``): moves the FFN slider ``--moves`` times. Two server times per move,
both measured inside the script run:

* ``fragment``: the slider's st.fragment (mask, parameter count, kept counts, mask heatmaps): what
  a browser's slider move reruns in the real app;
* ``full``: a whole script run (sidebar, navigation, page) - an upper bound, and what AppTest runs.

**Repair** (``--part repair``): presses Evaluate with the ``lsq`` repair on the page's default 512
calibration rows at FFN 50 %, one fresh session per task of ``--repair-tasks``: the repair's own
seconds inside the run's job (per layer, every layer refit) and the whole press (dense, pruned and
repaired on 64 rows).

**Evaluation** (``--part eval``): presses Evaluate on every row of sst2/validation (``--eval-limit``
for fewer) in fresh sessions on the warm model (loaded once per process, as the server keeps it),
each with another FFN sparsity so that the pruned model is evaluated each time. The server time of
the press (dense and pruned, run kept on disk, history row) is measured inside the page:

* ``cold``: the first press, the dense logits not on disk yet;
* ``warm``: later sessions (a reload, another session): the dense logits read from disk, the pruned
  model sliced and evaluated;
* ``reopen``: a fresh session opening a run by its address (``?run=<id>``): a whole script run.

Beside them, the library's own evaluation of the same rows on a model of its own
(:func:`mtprune.evaluation.evaluate`): dense, and pruned with hooks (``soft``) and sliced (``hard``).

AppTest's own overhead (tree parsing, a fresh ScriptCache that recompiles the page) is in none of
these. Exits 1 when the median fragment time is over ``--budget-ms`` or the median warm evaluation
is over ``--eval-budget-s``, or a repair over ``--repair-budget-s``.
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

ROOT = Path(__file__).resolve().parent.parent


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def stats(xs, unit=1000.0, digits=1):
    v = [unit * x for x in xs]
    return {"median": round(statistics.median(v), digits), "p90": round(percentile(v, 0.9), digits),
            "max": round(max(v), digits)}


def prune_page(examples: int, params: dict | None = None, task: str = "sst2"):
    """A fresh session on Prune and evaluate (the scores read from the cache)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    for k, v in {"sb.examples": str(examples), **(params or {})}.items():
        at.query_params[k] = v
    at.run()
    if task != "sst2":
        at.sidebar.selectbox(key="sb.task").set_value(task).run()
    at.switch_page("app_pages/prune.py").run()
    for b in at.button:
        if b.key == "prune.compute":
            b.click().run()
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {[e.value for e in (*at.exception, *at.error)]}")
    return at


def bench_slider(at, moves: int) -> dict:
    values = [5 * (i % 19) for i in range(1, moves + 2)]  # 5 % .. 90 %, every move a change
    full, frag, wall = [], [], []
    for i, v in enumerate(values):
        if v == at.slider(key="prune.ffn").value:
            v = (v + 5) % 100
        at.slider(key="prune.ffn").set_value(v)
        t = time.perf_counter()
        at.run()
        w = time.perf_counter() - t
        if at.exception:
            raise SystemExit(f"exception: {at.exception[0].value}")
        if i == 0:
            continue  # warm-up
        wall.append(w)
        full.append(at.session_state["_run_seconds"])
        frag.append(at.session_state["_prune.fragment_seconds"])
    return {"moves": len(full), "fragment": stats(frag), "full_run": stats(full), "apptest_wall": stats(wall)}


def press_evaluate(examples: int, ffn: int, limit: int | None) -> dict:
    """One fresh session pressing Evaluate at ``ffn`` % FFN sparsity: server seconds, and how the
    dense and pruned logits were had."""
    at = prune_page(examples, {"prune.ffn": str(ffn)})
    if limit is None:
        at.checkbox(key="prune.limit.all").check()
    else:
        at.number_input(key="prune.limit").set_value(limit)
    at.button(key="prune.evaluate").click().run()
    if at.exception or at.error:
        raise SystemExit(f"evaluation failed: {[e.value for e in (*at.exception, *at.error)]}")
    evals = list(at.session_state["_state.stores"]["evals"].values())
    run = at.query_params.get("run")
    return {"ffn": ffn, "seconds": at.session_state["_prune.evaluate_seconds"], "rows": evals[0].n,
            "dense": {"seconds": round(evals[0].seconds, 3), "how": evals[0].how},
            "pruned": {"seconds": round(evals[1].seconds, 3), "how": evals[1].how},
            "run": run[0] if isinstance(run, list) else run}


def bench_repair(examples: int, tasks: list[str], calib: int, rows: int) -> list[dict]:
    """Evaluate with the lsq repair on ``calib`` calibration rows, FFN 50 %, one fresh session per
    task: the repair's own seconds (inside the run's job) and the whole press's."""
    out = []
    for task in tasks:
        at = prune_page(examples, {"prune.ffn": "50"}, task)
        at.selectbox(key="prune.repair").set_value("lsq").run()
        at.number_input(key="prune.calib").set_value(calib)
        at.number_input(key="prune.limit").set_value(rows)
        at.button(key="prune.evaluate").click().run()
        if at.exception or at.error:
            raise SystemExit(f"evaluation failed: {[e.value for e in (*at.exception, *at.error)]}")
        run = next(iter(at.session_state["_state.stores"]["runs"].values()))
        rep = run.repair["report"]
        out.append({"task": task, "calibration_rows": rep["calibration_rows"], "tokens": rep["tokens"],
                    "repair_s": round(rep["seconds"], 2), "press_s": round(at.session_state["_prune.evaluate_seconds"], 2),
                    "eval_rows": run.n})
    return out


def library_times(examples: int, limit: int | None) -> dict:
    """The library's own evaluation of the same rows: dense, and an FFN 50 % mask soft and hard."""
    from mtprune.attribution import AttributionSpec, attribute_cached
    from mtprune.checkpoints import load_adapter
    from mtprune.evaluation import eval_rows, evaluate
    from mtprune.masks import mask_from_scores

    adapter = load_adapter("default", device="cpu")
    rows = eval_rows("sst2", "validation", limit)
    scores, _, _ = attribute_cached(adapter, AttributionSpec(task="sst2", examples=examples))
    mask = mask_from_scores(scores, {"ffn": 0.5, "heads": 0.0}, scope="layer")
    evaluate(adapter, "sst2", "validation", rows=rows[:32])  # warm-up
    out = {}
    ways = {"dense": {}, "soft": {"mask": mask, "prune": "soft"}, "hard": {"mask": mask, "prune": "hard"}}
    for name, kw in ways.items():
        t = time.perf_counter()
        evaluate(adapter, "sst2", "validation", rows=rows, **kw)
        out[name] = round(time.perf_counter() - t, 3)
    return out


def bench_eval(examples: int, limit: int | None, sessions: int) -> dict:
    cold = press_evaluate(examples, 50, limit)
    warm = [press_evaluate(examples, ffn, limit) for ffn in (40, 60, 30, 70, 20, 80)[:sessions]]
    at = prune_page(examples, {"run": cold["run"]})
    return {"rows": cold["rows"], "cold": cold, "warm": warm,
            "warm_seconds": stats([w["seconds"] for w in warm], 1.0, 3),
            "reopen_seconds": round(at.session_state["_run_seconds"], 3),
            "library": library_times(examples, limit)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["all", "slider", "eval", "repair"], default="all")
    ap.add_argument("--moves", type=int, default=30)
    ap.add_argument("--examples", "--samples", dest="examples", type=int, default=16, help="attribution examples (scores computed once)")
    ap.add_argument("--budget-ms", type=float, default=150.0)
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluation rows (default: all of sst2/validation)")
    ap.add_argument("--eval-sessions", type=int, default=3, help="warm sessions, each with another sparsity")
    ap.add_argument("--eval-budget-s", type=float, default=3.0)
    ap.add_argument("--repair-tasks", default="sst2,mrpc,rte", help="--part repair: the tasks, one session each")
    ap.add_argument("--repair-calib", type=int, default=512, help="--part repair: calibration rows (the page's default)")
    ap.add_argument("--repair-budget-s", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    os.environ.setdefault("MTPRUNE_CACHE", tempfile.mkdtemp(prefix="mtprune-bench-"))
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import torch

    t0 = time.perf_counter()
    at = prune_page(args.examples)
    out = {"setup_s": round(time.perf_counter() - t0, 1), "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if args.part in ("all", "slider"):
        out["slider"] = {**bench_slider(at, args.moves), "budget_ms": args.budget_ms}
    if args.part in ("all", "eval"):
        out["evaluation"] = {**bench_eval(args.examples, args.eval_limit, args.eval_sessions),
                             "budget_s": args.eval_budget_s}
    if args.part in ("all", "repair"):
        out["repair"] = bench_repair(args.examples, args.repair_tasks.split(","), args.repair_calib, 64)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        report(out)
    ok = True
    if "slider" in out:
        ok &= out["slider"]["fragment"]["median"] <= args.budget_ms
        print(f"{'OK' if ok else 'OVER BUDGET'}: median fragment re-render {out['slider']['fragment']['median']} ms "
              f"(budget {args.budget_ms:.0f} ms)")
    if "evaluation" in out:
        e = out["evaluation"]
        good = e["warm_seconds"]["median"] <= args.eval_budget_s
        ok &= good
        print(f"{'OK' if good else 'OVER BUDGET'}: median warm evaluation of {e['rows']} rows, dense and pruned, "
              f"{e['warm_seconds']['median']} s (budget {args.eval_budget_s:g} s; the library's dense evaluation "
              f"alone: {e['library']['dense']} s)")
    for r in out.get("repair", []):
        good = r["repair_s"] <= args.repair_budget_s
        ok &= good
        print(f"{'OK' if good else 'OVER BUDGET'}: in-app lsq repair of {r['task']} on {r['calibration_rows']} rows "
              f"({r['tokens']:,} tokens) {r['repair_s']} s (budget {args.repair_budget_s:g} s; the whole press with "
              f"{r['eval_rows']} evaluation rows {r['press_s']} s)")
    return 0 if ok else 1


def report(out: dict) -> None:
    print(f"{out['cpus']} CPUs, {out['threads']} torch threads, setup {out['setup_s']} s")
    if "slider" in out:
        s = out["slider"]
        print(f"slider move, {s['moves']} moves on cached scores:")
        for k in ("fragment", "full_run", "apptest_wall"):
            print(f"  {k:13s} median {s[k]['median']:6.1f} ms   p90 {s[k]['p90']:6.1f} ms   max {s[k]['max']:6.1f} ms")
    if "evaluation" in out:
        e = out["evaluation"]
        print(f"Evaluate, {e['rows']} sst2/validation rows, dense and pruned (server time of the press):")
        c = e["cold"]
        print(f"  cold  (dense computed)      {c['seconds']:6.2f} s   dense {c['dense']['seconds']:.2f} s "
              f"({c['dense']['how']}), pruned {c['pruned']['seconds']:.2f} s ({c['pruned']['how']})")
        for w in e["warm"]:
            print(f"  warm  (ffn {w['ffn']:2d} %)            {w['seconds']:6.2f} s   "
                  f"dense {w['dense']['seconds']:.2f} s "
                  f"({w['dense']['how']}), pruned {w['pruned']['seconds']:.2f} s ({w['pruned']['how']})")
        print(f"  warm median {e['warm_seconds']['median']:.2f} s, max {e['warm_seconds']['max']:.2f} s; "
              f"reopening a run by its address: {e['reopen_seconds']:.2f} s (a whole script run)")
        lib = e["library"]
        print(f"  the library alone, same rows: dense {lib['dense']:.2f} s, pruned with hooks {lib['soft']:.2f} s, "
              f"pruned sliced {lib['hard']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
