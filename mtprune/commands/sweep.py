"""``mtprune sweep``: the metric of every task against sparsity, per method; a CSV and a chart."""

import sys
import time
from pathlib import Path

from mtprune.commands.common import (add_examples_arg, add_experiment_args, add_kinds_arg, add_repair_arg, eval_settings,
                                     load_model,
                                     logger, method_help, write_chart)
from mtprune.distributed import is_main
from mtprune.costs import KIND_NORMALISATIONS
from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/sweep.csv"


def register(sub):
    from mtprune.experiments.sweep import DEFAULT_METHODS, SETTINGS
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser("sweep", help="metric against sparsity per task and method (baselines included)",
                       description="One row per task, method, sparsity and trial: the metrics of the task "
                                   "with the method's mask. Rows already in --out with the same key are reused.")
    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (default: the benchmark)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated (default {','.join(DEFAULT_METHODS)}). {method_help(None)}")
    p.add_argument("--sparsities", default=None,
                   help="start:stop:step (stop included) or a list (default 0:1:0.1; with --budgets: 0, the dense model)")
    p.add_argument("--budgets", default=None,
                   help="the accuracy/cost frontier: budgets spent over heads and FFN neurons of every layer, e.g. "
                        "flops:0.8,0.7,0.6 (a measure, then fractions of the prunable FLOPs / params / latency); "
                        "use with --kinds all to prune both kinds")
    add_repair_arg(p, "none", "repairs to evaluate every mask with", many=True)
    p.add_argument("--calib", type=int, default=1024, help="calibration rows for repair (default 1024)")
    p.add_argument("--normalise", default="sum", choices=KIND_NORMALISATIONS,
                   help="budget search: divide each kind's scores by their sum (default) or compare them as they are")
    p.add_argument("--latency", action="store_true",
                   help="time every evaluated model on 32 rows (column latency_ms; physically pruned copies)")
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"),
                   help="the same sparsity in every layer (default), or one ranking per unit group")
    p.add_argument("--stack", default="all", choices=("encoder", "decoder", "all"),
                   help="prune the encoder, the decoder or both (T5; default all)")
    add_examples_arg(p, None, "examples for attribution, or a list (default 256; low-resource: 10,100,1000)",
                     auto=True, many=True)
    p.add_argument("--trials", type=int, default=5,
                   help="trials of the seeded baselines (random, random-label, activation), and of ap and ig "
                        "with --sample-trials (default 5)")
    p.add_argument("--sample-trials", action="store_true",
                   help="run ap and ig --trials times too, each on a new sample of examples (seed = trial), "
                        "so that every data-driven method is averaged over the same number of samplings")
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--steps", type=int, default=20, help="integration steps of ig")
    p.add_argument("--seed", type=int, default=0, help="the seed of trial 0 (trial t uses seed + t)")
    p.add_argument("--setting", default="standard", choices=SETTINGS,
                   help="the paper's settings: low-resource (10/100/1000 examples, 5 samplings), "
                        "unsupervised (ap with and without labels)")
    p.add_argument("--split", default=None, help="evaluation split for every task (default: each task's validation)")
    p.add_argument("--metric", default="accuracy", help="what the chart and the summary show (default accuracy)")
    p.add_argument("--compare", default=None, metavar="A:B[,A:B]",
                   help="after the summary, the difference A - B per task and on average with its standard "
                        "error (trials paired), e.g. ap:random-label,ap:activation")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def build_config(args):
    from mtprune.costs import parse_budgets
    from mtprune.solvers import check_solvers
    from mtprune.experiments.core import parse_examples, parse_list
    from mtprune.experiments.sweep import SweepConfig, setting_config

    budgets = parse_budgets(args.budgets)  # parsed once, here: Budget objects from now on
    sparsities = args.sparsities if args.sparsities is not None else ("0" if budgets else "0:1:0.1")
    base = SweepConfig(tasks=tuple(parse_list(args.tasks, "tasks")), methods=tuple(parse_list(args.methods, "methods")),
                       sparsities=sparsities, kinds=args.kinds, scope=args.scope, stack=args.stack,
                       trials=args.trials, variant=args.variant, seed=args.seed, steps=args.steps,
                       sample_trials=args.sample_trials, budgets=budgets,
                       repairs=check_solvers(args.repair), calib=args.calib, normalise=args.normalise,
                       latency=args.latency, reliability=args.reliability, max_examples=args.max_examples)
    overrides = {}
    if args.examples is not None:
        overrides["examples"] = tuple(parse_examples(args.examples, args.reliability, args.max_examples))
    return setting_config(args.setting, base, **overrides)


def parse_compare(text: str | None) -> list[tuple[str, str]]:
    """``ap:random-label,ap:activation`` -> [(ap, random-label), (ap, activation)]."""
    if text is None:
        return []
    pairs = []
    for item in text.split(","):
        parts = [x.strip() for x in item.split(":")]
        if len(parts) != 2 or not all(parts):
            raise MtpruneError(f"--compare takes pairs A:B separated by commas, not {item.strip()!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def run(args):
    from mtprune.experiments.sweep import compare, format_compare, format_summary, run_sweep, summarize
    from mtprune.text import fmt_seconds

    settings = eval_settings(args)
    cfg = build_config(args)
    if cfg.latency:
        from dataclasses import replace

        settings = replace(settings, latency=True)
    if args.metric not in ("accuracy", "f1", "mcc"):
        raise MtpruneError(f"--metric must be accuracy, f1 or mcc, not {args.metric!r}")
    pairs = parse_compare(args.compare)
    for name in {n for pair in pairs for n in pair}:  # before any work: a method this sweep runs
        if name.split(" ")[0] not in cfg.methods:
            raise MtpruneError(f"--compare names {name!r}, which this sweep does not run (methods: "
                               f"{', '.join(cfg.methods)})")
    adapter = load_model(args)
    t0 = time.perf_counter()
    df = run_sweep(adapter, cfg, settings, out=args.out, resume=not args.no_resume, log=logger(args))
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(f"wrote {len(df)} row{'' if len(df) == 1 else 's'} to {args.out} "
          f"({fmt_seconds(time.perf_counter() - t0)})", file=sys.stderr)
    d = df.dropna(subset=[args.metric])
    if d.empty:
        raise MtpruneError(f"no task of this sweep has the metric {args.metric!r}")
    if cfg.budgets:
        from mtprune.experiments.sweep import format_frontier, frontier_table

        print(f"{args.metric} at every budget (mean over trials; dense for reference):")
        print(format_frontier(frontier_table(d, args.metric)))
        if not args.no_plot:
            from mtprune.plots import frontier_figure

            base = args.plot or str(Path(args.out).with_suffix(""))
            write_chart(args, frontier_figure(d, args.metric, title=f"{args.metric} against FLOPs kept "
                                                                   f"({adapter.display_name})"), base + "_frontier")
        d = d[d["budget"].fillna("").astype(str).eq("")]
        if d["sparsity"].nunique() < 2:
            return 0
    lo, hi = 0.1, 0.9
    if not ((d["sparsity"] >= lo - 1e-9) & (d["sparsity"] <= hi + 1e-9)).any():
        lo, hi = float(d["sparsity"].min()), float(d["sparsity"].max())
    print(f"mean {args.metric} over sparsities {lo:g}-{hi:g}:")
    print(format_summary(summarize(d, args.metric, lo, hi)))
    for a, b in pairs:
        print(f"\n{a} - {b}, mean {args.metric} over sparsities {lo:g}-{hi:g}:")
        print(format_compare(compare(d, a, b, args.metric, lo, hi)))
    if not args.no_plot:
        from mtprune.plots import sweep_figure

        title = f"{args.metric} against sparsity ({cfg.kinds}, {cfg.scope} scope, {adapter.display_name})"
        write_chart(args, sweep_figure(d, args.metric, title=title))
    return 0
