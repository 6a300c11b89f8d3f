"""``mtprune transfer``: every task's mask evaluated on every task, next to the dense model and a
random mask of the same size, with 95% intervals."""

from mtprune.distributed import is_main
import sys

from mtprune.commands.common import (add_examples_arg, add_experiment_args, add_kinds_arg, add_repair_arg, eval_settings,
                                     load_model,
                                     logger, write_chart)

DEFAULT_OUT = "results/transfer.csv"


def register(sub):
    from mtprune.tasks import BENCHMARK

    p = sub.add_parser("transfer", help="does one task's mask serve another? a task x task matrix",
                       description="Every task is evaluated (through its own head) with every task's mask, its "
                                   "own on the diagonal, beside the dense model and a random mask of the same "
                                   "size; every metric with its 95% interval, and every cell tested (McNemar, "
                                   "on the same rows) against the task's own mask and the random mask.")
    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks, two or more")
    p.add_argument("--sparsity", default="0.5", help="the sparsity of every mask (default 0.5)")
    p.add_argument("--budget", default=None, help="a budget instead of a sparsity: flops:0.6 (both kinds, all layers)")
    p.add_argument("--method", default="ap", help="attribution method (default ap)")
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    add_examples_arg(p, 256, auto=True)
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    add_repair_arg(p, "none", "repair every pruned model on its mask source's train rows")
    p.add_argument("--calib", type=int, default=1024, help="calibration rows for repair (default 1024)")
    p.add_argument("--no-random", action="store_true", help="leave out the random mask of the same size")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.transfer import TransferConfig, format_transfer, run_transfer, transfer_matrix

    settings = eval_settings(args)
    cfg = TransferConfig(tasks=args.tasks, sparsity=None if args.budget else args.sparsity, budget=args.budget,
                         method=args.method, kinds=args.kinds, scope=args.scope, examples=args.examples,
                         variant=args.variant, seed=args.seed, repair=args.repair, calib=args.calib,
                         random=not args.no_random, reliability=args.reliability, max_examples=args.max_examples)
    adapter = load_model(args)
    df = run_transfer(adapter, cfg, settings, out=args.out, resume=not args.no_resume, log=logger(args))
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(f"wrote {len(df)} row{'' if len(df) == 1 else 's'} to {args.out}", file=sys.stderr)
    matrix = transfer_matrix(df)
    print(f"accuracy of each task (columns) with each task's mask (rows; {cfg.describe()}), 95% intervals:")
    print(format_transfer(matrix))
    print(verdict_lines(df))
    if not args.no_plot:
        from mtprune.plots import transfer_heatmap

        write_chart(args, transfer_heatmap(matrix, title=f"accuracy with each task's mask ({cfg.describe()})"))
    return 0


def verdict_lines(df) -> str:
    """Every tested cell's verdict in words, one line each."""
    if "verdict" not in df:
        return "no paired tests in these rows (written before them: --no-resume tests them)"
    tested = df[df["verdict"].fillna("").astype(str).ne("")]
    return "\n".join(["paired tests (McNemar's exact test on the same rows, p < 0.05):"]
                     + [f"  {r.target} with {r.mask_from}'s mask: {r.verdict}" for r in tested.itertuples()])
