"""``mtprune quota``: one mask for several tasks under a multi-task parameter quota, against one mask
per task (``mtprune budget``, the verb's first name, still works). A quota is not a budget
(``--budget flops:0.6`` of the other verbs): it is the parameters several tasks share."""

from mtprune.distributed import is_main
import sys

from mtprune.commands.common import (add_examples_arg, add_experiment_args, add_kinds_arg, add_repair_arg, eval_settings,
                                     load_model,
                                     logger, write_chart)

DEFAULT_OUT = "results/budget.csv"  # the file of before the rename: old results resume


def register(sub):
    from mtprune.experiments.quota import COMBINERS, TASK_NORMALISATIONS
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser("quota", aliases=["budget"],
                       help="multi-task parameter quota: a joint mask against an ensemble of task masks "
                            "(budget is the old name)",
                       description="The quota counts the kept parameters of the pruned units (FFN "
                                   "neurons and/or heads) that several tasks share. joint: one mask from the "
                                   "tasks' normalised, combined scores; ensemble: one mask per task with "
                                   "quota / tasks each. `mtprune budget` is the old name of this verb.")
    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (two or more)")
    p.add_argument("--quotas", "--budgets", "--budget", dest="quotas", default="50%",
                   help="kept unit parameters the tasks share: 40%%, 0.4, 3M, 250k, or a list (default 50%%; "
                        "--budgets and --budget are the old spellings)")
    p.add_argument("--method", default="ap")
    add_examples_arg(p, 256, auto=True)
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--task-normalise", "--normalise", dest="task_normalise", default="sum",
                   choices=TASK_NORMALISATIONS,
                   help="how each task's scores are normalised before they are combined (default sum; "
                        "--normalise is the old spelling)")
    p.add_argument("--combine", default="mean", choices=COMBINERS)
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="evaluation split (default: each task's validation)")
    add_repair_arg(p, "none", "repair every mask: the joint one on every task's train rows, each ensemble member on "
                              "its own task's")
    p.add_argument("--calib", type=int, default=1024, help="calibration rows per task for repair (default 1024)")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.quota import QuotaConfig, prunable_params, quota_table, run_quota

    settings = eval_settings(args)
    cfg = QuotaConfig(tasks=args.tasks, quotas=args.quotas, method=args.method, examples=args.examples,
                      variant=args.variant, kinds=args.kinds, scope=args.scope, task_normalise=args.task_normalise,
                      combine=args.combine, seed=args.seed, repair=args.repair, calib=args.calib,
                      reliability=args.reliability, max_examples=args.max_examples)
    adapter = load_model(args)
    total = prunable_params(adapter, cfg.kinds)
    cfg.resolved_quotas(total)  # a quota larger than the model: one line before any work
    df = run_quota(adapter, cfg, settings, out=args.out, resume=not args.no_resume, log=logger(args))
    if not is_main():  # torchrun: rank 0 reports
        return 0
    # the printed lines are those of before the rename, word for word ("budget": the quota)
    print(f"wrote {args.out}", file=sys.stderr)
    print(f"accuracy ({cfg.kinds} budget of {total:,} prunable parameters):")
    print(quota_table(df).round(3).to_string())
    per = df[~df["task"].isin(["mean"]) & df["setting"].isin(["joint", "ensemble"])]
    for q, g in per.groupby("budget"):
        joint = int(g[g["setting"] == "joint"]["kept_params"].iloc[0])
        ens = int(g[g["setting"] == "ensemble"]["kept_params"].sum())
        print(f"budget {int(q):,}: joint mask keeps {joint:,} parameters, the ensemble {ens:,} in all")
    if not args.no_plot:
        from mtprune.plots import quota_figure

        write_chart(args, quota_figure(df))
    return 0
