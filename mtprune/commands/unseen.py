"""``mtprune unseen``: masks built on one task's data, evaluated on other sets through the same head."""

import sys

from mtprune.commands.sweep import add_experiment_args, check_common, load_model, logger, write_chart
from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/unseen.csv"


def register(sub):
    p = sub.add_parser("unseen", help="masks from one task evaluated on unseen domains and other tasks",
                       description="Pairs source:target: the mask is built from the source's data and "
                                   "the target is evaluated through the source's head (imdb through "
                                   "sst2), or through its own head in the cross-task case (qnli with "
                                   "an rte mask, with its own mask as reference).")
    p.add_argument("--pairs", default="paper",
                   help="'sst2:imdb,yelp;qnli:scitail' or 'paper' (default: sst2 -> imdb, yelp, amazon, mr, "
                        "cr, vader_*; qnli, rte -> scitail; cb -> sick; rte, sst2 -> qnli)")
    p.add_argument("--methods", default="ap,random", help="attribution methods (default ap,random)")
    p.add_argument("--sparsities", default="0:0.9:0.1", help="start:stop:step or a list (default 0:0.9:0.1)")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--trials", type=int, default=5, help="trials of random, random-label and activation")
    p.add_argument("--units", default="ffn", choices=("ffn", "heads", "all"))
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.core import attribution_methods, parse_methods, parse_sparsities
    from mtprune.experiments.unseen import parse_pairs, run_unseen, unseen_summary

    check_common(args)
    pairs = parse_pairs(args.pairs)
    methods = parse_methods(args.methods, allowed=attribution_methods())
    sparsities = parse_sparsities(args.sparsities)
    if args.samples < 1:
        raise MtpruneError(f"--samples must be at least 1, not {args.samples}")
    if args.trials < 1:
        raise MtpruneError(f"--trials must be at least 1, not {args.trials}")
    adapter = load_model(args)
    df = run_unseen(adapter, pairs, methods, sparsities, samples=args.samples, trials=args.trials,
                    units=args.units, scope=args.scope, variant=args.variant, limit=args.limit,
                    batch_size=args.batch_size, seed=args.seed, out=args.out, resume=not args.no_resume,
                    log=logger(args), prune=args.prune)
    print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    lo = min((s for s in sparsities if s > 0), default=0.0)
    hi = max(sparsities)
    tab = unseen_summary(df, lo=lo, hi=hi)
    print(f"accuracy: dense, and the mean over sparsities {lo:g}-{hi:g}:")
    print(tab.round(3).to_string())
    if not args.no_plot:
        from mtprune.plots import unseen_figure

        write_chart(args, unseen_figure(df))
    return 0
