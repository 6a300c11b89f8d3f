"""``mtprune overlap``: Jaccard similarity of the units several tasks keep, per layer and task x task."""

import sys
from pathlib import Path

from mtprune.commands.common import (add_examples_arg, add_kinds_arg, add_model_args, add_threads_arg, check_out_csv,
                                     load_model, logger, set_threads, write_chart)
from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/overlap.csv"


def register(sub):
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser("overlap", help="task x task and per-layer overlap (Jaccard) of the kept units",
                       description="Masks of several tasks at one sparsity (from attribution, or mask "
                                   "files), compared by the Jaccard similarity of their kept units, and each "
                                   "pair against the within-task floor (what a task shares with another draw "
                                   "of its own examples). --out gets the task x task matrix; <out>_layers.csv "
                                   "the per-layer values; <out>_pairs.csv every pair against the floors.")
    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (default: the benchmark)")
    p.add_argument("--masks", default=None,
                   help="compare saved masks instead: name=path.json,... (or paths, named by their task)")
    p.add_argument("--method", default="ap", help="attribution method (default ap)")
    p.add_argument("--sparsity", default="0.5", help="the sparsity of every mask (default 0.5)")
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    add_examples_arg(p, 256, auto=True)
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p, task=False)
    p.add_argument("--out", default=DEFAULT_OUT, help=f"the task x task CSV (default {DEFAULT_OUT})")
    p.add_argument("--plot", default=None, help="the charts' path without suffix (default: --out without .csv)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--quiet", action="store_true")
    add_threads_arg(p)
    p.set_defaults(func=run)


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


def run(args):
    from mtprune.experiments.core import parse_sparsity, write_table
    from mtprune.experiments.overlap import OverlapConfig, compare_masks, mean_layer_jaccard, random_jaccard, run_overlap

    set_threads(args)
    check_out_csv(args.out)
    p = parse_sparsity(args.sparsity)
    if args.masks:
        result = compare_masks(_mask_files(args.masks))
    else:
        cfg = OverlapConfig(tasks=args.tasks, method=args.method, sparsity=p, kinds=args.kinds, scope=args.scope,
                            examples=args.examples, variant=args.variant, seed=args.seed,
                            reliability=args.reliability, max_examples=args.max_examples)
        adapter = load_model(args)
        result = run_overlap(adapter, cfg, log=logger(args))
    out = Path(args.out)
    write_table(result.matrix.reset_index(), out)
    layers_out = out.with_name(out.stem + "_layers.csv")
    write_table(result.per_layer, layers_out)
    pairs_out = out.with_name(out.stem + "_pairs.csv")
    write_table(result.pairs, pairs_out)
    print(f"wrote {out}, {layers_out} and {pairs_out}", file=sys.stderr)
    print(f"Jaccard similarity of kept units ({', '.join(result.masks)}):")
    print(result.matrix.round(3).to_string())
    q = result.mean_kept_fraction()
    if q == q:
        print(f"random masks keeping {q:.0%} of the units would share {random_jaccard(q):.3f}")
    print("mean over task pairs, per layer:")
    print(mean_layer_jaccard(result.per_layer).round(3).to_string(index=False))
    print(floor_text(result))
    if not args.no_plot:
        from mtprune.plots import overlap_heatmap, overlap_layers_figure

        base = args.plot or str(out.with_suffix(""))
        write_chart(args, overlap_heatmap(result.matrix, chance=result.chance, pairs=result.pairs,
                                          title=f"overlap of kept units at sparsity {p:g} (Jaccard)"), base)
        write_chart(args, overlap_layers_figure(result.per_layer, title=f"overlap per layer at sparsity {p:g}"),
                    base + "_layers")
    return 0


def floor_text(result) -> str:
    """Every pair against the within-task floors: a table and what its marks mean."""
    pairs = result.pairs
    if pairs is None or pairs[["floor_a", "floor_b"]].isna().all(axis=None):
        return ("within-task floors unknown: compare masks from scores with fold sums (not mask files) to test "
                "the overlaps against them")
    cols = ["task_a", "task_b", "jaccard", "chance", "floor_a", "floor_b", "p_floor", "verdict"]
    return ("every pair against the within-task floors (the Jaccard of a task's kept units with another draw of "
            "as many of its examples; distinct: below both floors in 95% of simulated draws):\n"
            + pairs[cols].round(3).to_string(index=False))
