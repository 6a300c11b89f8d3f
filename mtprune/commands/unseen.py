"""``mtprune unseen``: masks built on one task's data, evaluated on other sets through the same head."""

from mtprune.distributed import is_main
import sys

from mtprune.commands.common import (add_examples_arg, add_experiment_args, add_kinds_arg, add_repair_arg, eval_settings,
                                     load_model,
                                     logger, write_chart)

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
    add_examples_arg(p, 256, auto=True)
    p.add_argument("--trials", type=int, default=5, help="trials of the seeded baselines (random, random-label, activation)")
    add_kinds_arg(p)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--variant", default="abs", choices=("abs", "signed"))
    p.add_argument("--seed", type=int, default=0)
    add_repair_arg(p, "none", "repairs to evaluate every mask with, on the calibration rows of --calib", many=True)
    p.add_argument("--calib", default="source", metavar="{source,target,mix}",
                   help="where a repair's calibration rows come from (no labels are read): source: the source "
                        "task's train rows (default); target: the target's own text, from a split other than the "
                        "one measured; mix: half each (a number here is the old spelling of --calib-rows)")
    p.add_argument("--calib-rows", type=int, default=None, help="calibration rows for repair (default 1024)")
    add_experiment_args(p, DEFAULT_OUT)
    p.set_defaults(func=run)


def run(args):
    from mtprune.experiments.core import parse_list
    from mtprune.solvers import get_solver
    from mtprune.experiments.unseen import (UnseenConfig, check_calibration, parse_pairs, run_unseen, unseen_summary,
                                            unseen_verdicts)

    settings = eval_settings(args)
    calib_from, calib_rows = read_calib(args.calib, args.calib_rows)
    cfg = UnseenConfig(pairs=tuple(parse_pairs(args.pairs)), methods=tuple(parse_list(args.methods, "methods")),
                       sparsities=args.sparsities, examples=args.examples, trials=args.trials, kinds=args.kinds,
                       scope=args.scope, variant=args.variant, seed=args.seed, repairs=args.repair, calib=calib_rows,
                       calib_from=calib_from, reliability=args.reliability, max_examples=args.max_examples)
    check_calibration(cfg, settings)
    adapter = load_model(args)
    df = run_unseen(adapter, cfg, settings, out=args.out, resume=not args.no_resume, log=logger(args))
    if not is_main():  # torchrun: rank 0 reports
        return 0
    print(f"wrote {len(df)} row{'' if len(df) == 1 else 's'} to {args.out}", file=sys.stderr)
    lo = min((s for s in cfg.sparsities if s > 0), default=0.0)
    hi = max(cfg.sparsities)
    said = {"source": "the source's train rows", "target": "each target's own text (another split)",
            "mix": "half the source's train rows, half each target's own text"}[cfg.calib_from]
    refit = any(get_solver(r).refits for r in cfg.repairs)
    print(f"accuracy: dense, and the mean over sparsities {lo:g}-{hi:g}"
          + (f" (repairs calibrated on {said}, {cfg.calib} rows)" if refit else "") + ":")
    print(unseen_summary(df, lo=lo, hi=hi).round(3).to_string())
    method = next((m for m in cfg.methods if m != "random"), None)
    if method is not None and hi > 0:
        print(f"at sparsity {hi:g}, {method} against dense, a random mask and the target's own mask (McNemar):")
        for line in unseen_verdicts(df, hi, method):
            print(f"  {line}")
    if not args.no_plot:
        from mtprune.plots import unseen_figure

        write_chart(args, unseen_figure(df))
    return 0


def read_calib(calib: str, rows: int | None) -> tuple[str, int]:
    """``(where calibration rows come from, how many)`` from ``--calib`` and ``--calib-rows``; a
    number in ``--calib`` is the old spelling of ``--calib-rows``."""
    from mtprune.errors import MtpruneError
    from mtprune.experiments.unseen import CALIB_CHOICES

    text = str(calib).strip()
    try:
        old = int(text)
    except ValueError:
        old = None
    if old is None:
        if text not in CALIB_CHOICES:
            raise MtpruneError(f"--calib is one of {', '.join(CALIB_CHOICES)} (or a number of rows, the old "
                               f"spelling of --calib-rows), not {text!r}")
        return text, 1024 if rows is None else rows
    if rows is not None:
        raise MtpruneError("give the calibration rows once: --calib-rows N (--calib N is its old spelling)")
    return "source", old
