"""``mtprune budget``: one mask for several tasks under a parameter budget, against one mask per task."""

import sys

from mtprune.commands.sweep import add_experiment_args, check_common, load_model, logger, write_chart
from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/budget.csv"


def register(sub):
    p = sub.add_parser("budget", help="multi-task budget: a joint mask against an ensemble of task masks",
                       description="The budget counts the kept parameters of the pruned units (FFN "
                                   "neurons and/or heads). joint: one mask from the tasks' normalised, "
                                   "combined scores; ensemble: one mask per task with budget / tasks each.")
    from mtprune.tasks import BENCHMARK

    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (two or more)")
    p.add_argument("--budgets", "--budget", dest="budgets", default="50%",
                   help="kept unit parameters: 40%%, 0.4, 3M, 250k, or a list (default 50%%)")
    p.add_argument("--method", default="ap")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--units", default="ffn", choices=("ffn", "heads", "all"))
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--normalise", default="sum", choices=("sum", "max", "rank"),
                   help="per-task normalisation before combining (default sum)")
    p.add_argument("--combine", default="mean", choices=("mean", "max"))
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="evaluation split (default: each task's validation)")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.budget import budget_table, parse_budget, prunable_params, run_budget
    from mtprune.experiments.core import attribution_methods, parse_list, parse_methods, parse_tasks

    check_common(args)
    tasks = parse_tasks(args.tasks)
    if len(tasks) < 2:
        raise MtpruneError("a multi-task budget needs at least two tasks")
    method = parse_methods(args.method, allowed=attribution_methods())[0]
    if args.samples < 1:
        raise MtpruneError(f"--samples must be at least 1, not {args.samples}")
    texts = parse_list(args.budgets, "budgets")
    adapter = load_model(args)
    total = prunable_params(adapter, args.units)
    budgets = sorted({parse_budget(b, total) for b in texts})
    df = run_budget(adapter, tasks, budgets, method=method, samples=args.samples, variant=args.variant,
                    units=args.units, scope=args.scope, normalise=args.normalise, combine=args.combine,
                    limit=args.limit, split=args.split, batch_size=args.batch_size, seed=args.seed,
                    out=args.out, resume=not args.no_resume, log=logger(args), prune=args.prune)
    print(f"wrote {args.out}", file=sys.stderr)
    print(f"accuracy ({args.units} budget of {total:,} prunable parameters):")
    print(budget_table(df).round(3).to_string())
    per = df[~df["task"].isin(["mean"]) & df["setting"].isin(["joint", "ensemble"])]
    for b, g in per.groupby("budget"):
        joint = int(g[g["setting"] == "joint"]["kept_params"].iloc[0])
        ens = int(g[g["setting"] == "ensemble"]["kept_params"].sum())
        print(f"budget {int(b):,}: joint mask keeps {joint:,} parameters, the ensemble {ens:,} in all")
    if not args.no_plot:
        from mtprune.plots import budget_figure

        write_chart(args, budget_figure(df))
    return 0
