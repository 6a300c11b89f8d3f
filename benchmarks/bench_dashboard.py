"""Benchmark: how long a sparsity-slider move takes to re-render on the server, on cached scores.

    python benchmarks/bench_dashboard.py [--moves 30] [--examples 16] [--budget-ms 150] [--json]

Runs the app under streamlit.testing's AppTest with the default model: computes the scores once
(into a temporary MTPRUNE_CACHE), opens "Prune and evaluate", then moves the FFN slider ``--moves``
times. Two server times per move, both measured inside the script run:

* ``fragment``: the slider's st.fragment (mask, parameter count, kept counts, mask heatmaps): what
  a browser's slider move reruns in the real app;
* ``full``: a whole script run (sidebar, navigation, page) - an upper bound, and what AppTest runs.

AppTest's own overhead (tree parsing, a fresh ScriptCache that recompiles the page) is not in
either. Exits 1 when the median fragment time is over ``--budget-ms``.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moves", type=int, default=30)
    ap.add_argument("--examples", "--samples", dest="examples", type=int, default=16, help="attribution examples (scores computed once)")
    ap.add_argument("--budget-ms", type=float, default=150.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    os.environ.setdefault("MTPRUNE_CACHE", tempfile.mkdtemp(prefix="mtprune-bench-"))
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.sidebar.number_input(key="sb.examples").set_value(args.examples).run()
    at.switch_page("app_pages/prune.py").run()
    for b in at.button:
        if b.key == "prune.compute":
            b.click().run()
    if at.exception or at.error:
        print("the page failed:", [e.value for e in (*at.exception, *at.error)], file=sys.stderr)
        return 2
    setup = time.perf_counter() - t0

    values = [5 * (i % 19) for i in range(1, args.moves + 2)]  # 5 % .. 90 %, every move a change
    full, frag, wall = [], [], []
    for i, v in enumerate(values):
        if v == at.slider(key="prune.ffn").value:
            v = (v + 5) % 100
        at.slider(key="prune.ffn").set_value(v)
        t = time.perf_counter()
        at.run()
        w = time.perf_counter() - t
        if at.exception:
            print("exception:", at.exception[0].value, file=sys.stderr)
            return 2
        if i == 0:
            continue  # warm-up
        wall.append(w)
        full.append(at.session_state["_run_seconds"])
        frag.append(at.session_state["_prune.fragment_seconds"])

    def stats(xs):
        ms = [1000 * x for x in xs]
        return {"median_ms": round(statistics.median(ms), 1), "p90_ms": round(percentile(ms, 0.9), 1),
                "max_ms": round(max(ms), 1)}

    out = {"moves": len(full), "setup_s": round(setup, 1), "fragment": stats(frag), "full_run": stats(full),
           "apptest_wall": stats(wall), "budget_ms": args.budget_ms, "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"slider move, {out['moves']} moves on cached scores ({out['cpus']} CPUs, setup {out['setup_s']} s):")
        for k in ("fragment", "full_run", "apptest_wall"):
            s = out[k]
            print(f"  {k:13s} median {s['median_ms']:6.1f} ms   p90 {s['p90_ms']:6.1f} ms   max {s['max_ms']:6.1f} ms")
    ok = out["fragment"]["median_ms"] <= args.budget_ms
    print(f"{'OK' if ok else 'OVER BUDGET'}: median fragment re-render {out['fragment']['median_ms']} ms "
          f"(budget {args.budget_ms:.0f} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
