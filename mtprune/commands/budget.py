"""``mtprune budget``: one mask for several tasks under a parameter budget, against one mask per task."""

from mtprune.distributed import is_main
import sys

from mtprune.commands.common import (add_examples_arg, add_experiment_args, add_kinds_arg, add_repair_arg, eval_settings,
                                     load_model,
                                     logger, write_chart)

DEFAULT_OUT = "results/budget.csv"


def register(sub):
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser("budget", help="multi-task budget: a joint mask against an ensemble of task masks",
                       description="The budget counts the kept parameters of the pruned units (FFN "
                                   "neurons and/or heads). joint: one mask from the tasks' normalised, "
                                   "combined scores; ensemble: one mask per task with budget / tasks each.")
    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (two or more)")
    p.add_argument("--budgets", "--budget", dest="budgets", default="50%",
                   help="kept unit parameters: 40%%, 0.4, 3M, 250k, or a list (default 50%%)")
    p.add_argument("--method", default="ap")
    add_examples_arg(p, 256)
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--normalise", default="sum", choices=("sum", "max", "rank"),
                   help="per-task normalisation before combining (default sum)")
    p.add_argument("--combine", default="mean", choices=("mean", "max"))
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="evaluation split (default: each task's validation)")
    add_repair_arg(p, "none", "repair every mask: the joint one on every task's train rows, each ensemble member on "
                              "its own task's")
    p.add_argument("--calib", type=int, default=1024, help="calibration rows per task for repair (default 1024)")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.budget import BudgetConfig, budget_table, prunable_params, run_budget

    settings = eval_settings(args)
    cfg = BudgetConfig(tasks=args.tasks, budgets=args.budgets, method=args.method, examples=args.examples,
                       variant=args.variant, kinds=args.kinds, scope=args.scope, normalise=args.normalise,
                       combine=args.combine, seed=args.seed, repair=args.repair, calib=args.calib)
    adapter = load_model(args)
    total = prunable_params(adapter, cfg.kinds)
    cfg.resolved_budgets(total)  # a budget larger than the model: one line before any work
    df = run_budget(adapter, cfg, settings, out=args.out, resume=not args.no_resume, log=logger(args))
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(f"wrote {args.out}", file=sys.stderr)
    print(f"accuracy ({cfg.kinds} budget of {total:,} prunable parameters):")
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
