"""``mtprune overlap``: Jaccard similarity of the units several tasks keep, per layer and task x task."""

import sys
from pathlib import Path

from mtprune.commands.sweep import add_threads_arg, check_common, load_model, logger, write_chart
from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/overlap.csv"


def register(sub):
    p = sub.add_parser("overlap", help="task x task and per-layer overlap (Jaccard) of the kept units",
                       description="Masks of several tasks at one sparsity (from attribution, or mask "
                                   "files), compared by the Jaccard similarity of their kept units. "
                                   "--out gets the task x task matrix; <out>_layers.csv the per-layer values.")
    from mtprune.tasks import BENCHMARK

    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (default: the benchmark)")
    p.add_argument("--masks", default=None,
                   help="compare saved masks instead: name=path.json,... (or paths, named by their task)")
    p.add_argument("--method", default="ap", help="attribution method (default ap)")
    p.add_argument("--sparsity", default="0.5", help="the sparsity of every mask (default 0.5)")
    p.add_argument("--units", default="ffn", choices=("ffn", "heads", "all"))
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--samples", type=int, default=256, help="examples for attribution (default 256)")
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="default", help="default, a local model directory or a hub id")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the task x task CSV (default {DEFAULT_OUT})")
    p.add_argument("--plot", default=None, help="the charts' path without suffix (default: --out without .csv)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_threads_arg(p)
    p.set_defaults(func=run, limit=None, batch_size=1)


def _mask_files(text: str) -> dict:
    from mtprune.masks import load_mask

    out = {}
    for item in [x.strip() for x in text.split(",") if x.strip()]:
        name, _, path = item.rpartition("=")
        m = load_mask(path)
        name = name or str(m.meta.get("task") or Path(path).stem)
        if name in out:
            raise MtpruneError(f"two masks are named {name!r}: write name=path")
        out[name] = m
    if len(out) < 2:
        raise MtpruneError("overlap needs at least two masks")
    return out


def masks_from_scores(adapter, tasks, method, sparsity, units, scope, samples, variant, seed, log):
    from mtprune.experiments.core import Runner

    runner = Runner(adapter, log=log)
    return {t.name: runner.mask(runner.scores(t.name, method, samples, seed=seed, variant=variant),
                                sparsity, scope=scope, units=units) for t in tasks}


def run(args):
    from mtprune.experiments.core import check_rate, parse_methods, parse_tasks, write_table
    from mtprune.experiments.overlap import mean_layer_jaccard, overlap_by_layer, overlap_matrix, random_jaccard

    check_common(args)
    try:
        p = float(args.sparsity)
    except ValueError:
        raise MtpruneError(f"--sparsity must be a number in [0, 1], not {args.sparsity!r}") from None
    p = check_rate(p)
    log = logger(args)
    if args.masks:
        masks = _mask_files(args.masks)
    else:
        tasks = parse_tasks(args.tasks)
        if len(tasks) < 2:
            raise MtpruneError("overlap needs at least two tasks")
        from mtprune.experiments.core import attribution_methods

        method = parse_methods(args.method, allowed=attribution_methods())[0]
        if args.samples < 1:
            raise MtpruneError(f"--samples must be at least 1, not {args.samples}")
        adapter = load_model(args)
        masks = masks_from_scores(adapter, tasks, method, p, args.units, args.scope, args.samples, args.variant,
                                  args.seed, log)
    matrix = overlap_matrix(masks)
    per_layer = overlap_by_layer(masks)
    out = Path(args.out)
    write_table(matrix.reset_index(), out)
    layers_out = out.with_name(out.stem + "_layers.csv")
    write_table(per_layer, layers_out)
    print(f"wrote {out} and {layers_out}", file=sys.stderr)
    kept = [1.0 - m.actual_sparsity() if hasattr(m, "actual_sparsity") else None for m in masks.values()]
    print(f"Jaccard similarity of kept units ({', '.join(masks)}):")
    print(matrix.round(3).to_string())
    q = [k for k in kept if k is not None]
    if q:
        print(f"random masks keeping {sum(q) / len(q):.0%} of the units would share {random_jaccard(sum(q) / len(q)):.3f}")
    means = mean_layer_jaccard(per_layer)
    print("mean over task pairs, per layer:")
    print(means.round(3).to_string(index=False))
    if not args.no_plot:
        from mtprune.plots import overlap_heatmap, overlap_layers_figure

        base = args.plot or str(out.with_suffix(""))
        args.plot = base
        write_chart(args, overlap_heatmap(matrix, title=f"overlap of kept units at sparsity {p:g} (Jaccard)"))
        args.plot = base + "_layers"
        write_chart(args, overlap_layers_figure(per_layer, title=f"overlap per layer at sparsity {p:g}"))
    return 0
