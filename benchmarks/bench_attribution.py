"""Attribution speed, side by side in one run: one fused pass for all layers vs a per-layer loop.

    python benchmarks/bench_attribution.py                 # default model, 256 SST-2 examples
    python benchmarks/bench_attribution.py --examples 64 --json out.json

What it measures on the same examples and batches (rows sorted by length, --batch-size each):

* ``ap`` fused: every unit of every layer from one forward and backward pass per batch (gates);
* ``ap`` per site: one pass per layer and unit kind (FFN neurons, heads), as a per-layer tool
  such as the knowledge-neurons code does it; and per layer: one pass per layer for both kinds;
* FFN neurons only: fused vs one pass per layer (the knowledge-neurons setting);
* ``ig``: its steps batched (repeated batch) vs one pass per step;

and prints seconds (wall and process CPU), examples/s, the ratios, and the largest difference
between the scores (relative to the largest score of the group). The machine's load average is
printed too: on a busy machine wall times swing, CPU times and their ratios much less.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# as `mtprune attribute` does: OpenMP waiters sleep instead of spinning (set before torch loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtprune import attribution as attr  # noqa: E402
from mtprune.attribution import AttributionSpec, ap_per_layer, attribute, sample_for  # noqa: E402
from mtprune.checkpoints import load_adapter  # noqa: E402
from mtprune.methods import engine  # noqa: E402


def rel_diff(a, b) -> float:
    worst = 0.0
    for g in b.arrays:
        x, y = np.nan_to_num(a.arrays[g].astype(np.float64)), np.nan_to_num(b.arrays[g].astype(np.float64))
        worst = max(worst, float(np.abs(x - y).max() / max(np.abs(y).max(), 1e-30)))
    return worst


def timed(fn, repeat=1):
    """Best of ``repeat``: (wall seconds, process CPU seconds, result)."""
    best = None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        w, cpu = time.perf_counter() - t, time.process_time() - c
        if best is None or w < best[0]:
            best = (w, cpu, out)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--examples", "--samples", dest="examples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ig-samples", type=int, default=10,
                    help="examples for the IG comparison (default 10: the low-resource setting)")
    ap.add_argument("--ig-steps", type=int, default=20)
    ap.add_argument("--kn-samples", type=int, default=32,
                    help="examples for the knowledge-neurons-style loop (one example per pass per layer); 0: skip")
    ap.add_argument("--repeat", type=int, default=2, help="best of N for the fused runs")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for everything (default: torch's choice, and 1 for comparison)")
    ap.add_argument("--skip-loops", action="store_true", help="time the fused pass only")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    load0 = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load0[0]:.1f} (1 min)")
    t = time.perf_counter()
    adapter = load_adapter(args.model, device="cpu")
    adapter.fingerprint()
    print(f"model {adapter.display_name} loaded in {time.perf_counter() - t:.1f} s")
    spec = AttributionSpec(args.task, examples=args.examples)
    t = time.perf_counter()
    rows = sample_for(spec)
    t_rows_first = time.perf_counter() - t
    t = time.perf_counter()
    sample_for(spec)
    t_rows_again = time.perf_counter() - t
    n_tok = [len(adapter.tokenizer(*[r[f] for f in spec.task_spec.fields])["input_ids"]) for r in rows]
    print(f"{len(rows)} {args.task}/{spec.resolved_split} examples (mean {np.mean(n_tok):.1f} tokens, "
          f"max {max(n_tok)}); drawing them took {t_rows_first:.2f} s ({t_rows_again:.2f} s again, in memory)")
    bs = args.batch_size
    attribute(adapter, spec, rows=rows[:8], batch_size=bs)  # warm-up

    fig: dict = {"examples": len(rows), "batch_size": bs, "threads": torch.get_num_threads(),
                 "load_average_start": load0[0], "seconds_draw_examples": t_rows_first}

    def line(name, w, cpu, n):
        print(f"  {name:<44} {w:7.2f} s wall {cpu:7.2f} s CPU  {n / w:7.1f} examples/s")

    print("\nap (gradient x activation), all units (FFN neurons + heads):")
    threads = torch.get_num_threads()
    if threads > 1 and not args.threads:  # side by side: torch's threads, and one thread
        torch.set_num_threads(1)
        w1, c1, _ = timed(lambda: attribute(adapter, spec, rows=rows, batch_size=bs), args.repeat)
        line("fused, 1 thread", w1, c1, len(rows))
        torch.set_num_threads(threads)
        fig.update(ap_fused_1thread_s=w1)
    w, cpu, fused = timed(lambda: attribute(adapter, spec, rows=rows, batch_size=bs), args.repeat)
    line(f"fused: one pass for all layers, {threads} threads", w, cpu, len(rows))
    fig.update(ap_fused_s=w, ap_fused_cpu_s=cpu, ap_examples_per_s=len(rows) / w)
    if fig.get("ap_fused_1thread_s", w) < w:
        print("  (one thread is faster here: the machine's cores are busy; see --threads)")
    t = time.perf_counter()
    attr.attribute(adapter, spec, batch_size=bs)  # the whole call, examples drawn (in memory)
    fig["ap_whole_call_s"] = time.perf_counter() - t
    print(f"  {'whole attribute() call (draw + compute)':<44} {fig['ap_whole_call_s']:7.2f} s wall")

    if not args.skip_loops:
        w2, cpu2, per_site = timed(lambda: ap_per_layer(adapter, spec, rows, batch_size=bs, by="site"))
        line(f"per-site loop ({per_site.meta['passes']} passes per batch)", w2, cpu2, len(rows))
        w3, cpu3, per_layer = timed(lambda: ap_per_layer(adapter, spec, rows, batch_size=bs, by="layer"))
        line(f"per-layer loop ({per_layer.meta['passes']} passes per batch)", w3, cpu3, len(rows))
        d2, d3 = rel_diff(fused, per_site), rel_diff(fused, per_layer)
        print(f"  speed-up vs per-site loop  {w2 / w:5.1f}x wall {cpu2 / cpu:5.1f}x CPU   max relative difference {d2:.1e}")
        print(f"  speed-up vs per-layer loop {w3 / w:5.1f}x wall {cpu3 / cpu:5.1f}x CPU   max relative difference {d3:.1e}")
        fig.update(ap_per_site_s=w2, ap_per_layer_s=w3, ratio_per_site=w2 / w, ratio_per_layer=w3 / w,
                   ratio_per_site_cpu=cpu2 / cpu, ratio_per_layer_cpu=cpu3 / cpu,
                   max_rel_diff_per_site=d2, max_rel_diff_per_layer=d3)

        print("\nap, FFN neurons only (the knowledge-neurons setting):")
        ffn = AttributionSpec(args.task, examples=args.examples, kinds="ffn")
        wf, cf, f_fused = timed(lambda: attribute(adapter, ffn, rows=rows, batch_size=bs), args.repeat)
        line("fused: one pass for all layers", wf, cf, len(rows))
        wl, cl, f_loop = timed(lambda: ap_per_layer(adapter, ffn, rows, batch_size=bs, by="layer"))
        line(f"per-layer loop ({f_loop.meta['passes']} passes per batch)", wl, cl, len(rows))
        df = rel_diff(f_fused, f_loop)
        print(f"  speed-up {wl / wf:5.1f}x wall {cl / cf:5.1f}x CPU   max relative difference {df:.1e}")
        fig.update(ffn_fused_s=wf, ffn_per_layer_s=wl, ratio_ffn_per_layer=wl / wf, max_rel_diff_ffn=df)

        if args.kn_samples:
            kn_rows = rows[: args.kn_samples]
            print(f"\nap, FFN neurons, knowledge-neurons style ({len(kn_rows)} examples): one example per pass, "
                  "one pass per layer:")
            wk_f, ck_f, k_fused = timed(lambda: attribute(adapter, ffn, rows=kn_rows, batch_size=bs), args.repeat)
            line(f"fused, batches of {bs}", wk_f, ck_f, len(kn_rows))
            wk, ck, k_loop = timed(lambda: ap_per_layer(adapter, ffn, kn_rows, batch_size=1, by="layer"))
            line("per-layer loop, one example per pass", wk, ck, len(kn_rows))
            dk = rel_diff(k_fused, k_loop)
            print(f"  speed-up {wk / wk_f:5.1f}x wall {ck / ck_f:5.1f}x CPU   max relative difference {dk:.1e} "
                  "(other padding: float noise)")
            fig.update(kn_fused_s=wk_f, kn_loop_s=wk, ratio_kn=wk / wk_f, max_rel_diff_kn=dk)

        print(f"\nig ({args.ig_steps} steps, {args.ig_samples} examples), all units:")
        ig = AttributionSpec(args.task, examples=args.ig_samples, method="ig", steps=args.ig_steps)
        ig_rows = rows[: args.ig_samples]
        wi, ci, ig_b = timed(lambda: attribute(adapter, ig, rows=ig_rows, batch_size=bs))
        line(f"steps batched (up to {engine.IG_PASS_TOKENS['cpu']} tokens per pass)", wi, ci, len(ig_rows))
        saved = engine.IG_PASS_TOKENS
        engine.IG_PASS_TOKENS = {"cpu": 1}
        try:
            wo, co, ig_o = timed(lambda: attribute(adapter, ig, rows=ig_rows, batch_size=bs))
        finally:
            engine.IG_PASS_TOKENS = saved
        line("one pass per step", wo, co, len(ig_rows))
        di = rel_diff(ig_b, ig_o)
        print(f"  speed-up {wo / wi:5.1f}x wall {co / ci:5.1f}x CPU   max relative difference {di:.1e}")
        fig.update(ig_batched_s=wi, ig_per_step_s=wo, ratio_ig=wo / wi, max_rel_diff_ig=di)

    load1 = os.getloadavg()
    fig["load_average_end"] = load1[0]
    budget = 5.0
    best = min(fig["ap_fused_s"], fig.get("ap_fused_1thread_s", fig["ap_fused_s"]))
    print(f"\nap over {len(rows)} examples: {best:.2f} s wall ({fig['ap_fused_cpu_s']:.2f} s CPU) at the better thread count "
          f"({'within' if best <= budget else 'OVER'} the {budget:.0f} s budget); "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
