"""``mtprune sweep``: the metric of every task against sparsity, per method; a CSV and a chart."""

import sys

from mtprune.errors import MtpruneError

DEFAULT_OUT = "results/sweep.csv"


def add_experiment_args(p, out_default: str) -> None:
    """What every experiment verb shares: model, evaluation size, output, resume, chart."""
    p.add_argument("--model", default="default", help="default, a local model directory or a hub id")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with a hub model")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate the first N rows of each evaluation split only (quick runs)")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--out", default=out_default, help=f"the results CSV (default {out_default})")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute rows already in --out (default: reuse rows with the same key)")
    p.add_argument("--plot", default=None,
                   help="the chart's path without suffix (default: --out without .csv); .html and .png")
    p.add_argument("--no-plot", action="store_true", help="write no chart")
    p.add_argument("--no-png", action="store_true", help="write the chart as HTML only")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--prune", default="soft", choices=("soft", "hard"),
                   help="apply masks with hooks (soft, default) or evaluate a physically pruned copy (hard: "
                        "the same logits, faster at high sparsity)")
    add_threads_arg(p)


def add_threads_arg(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")


def check_common(args) -> None:
    if args.limit is not None and args.limit < 1:
        raise MtpruneError(f"--limit must be at least 1, not {args.limit}")
    if args.batch_size < 1:
        raise MtpruneError(f"--batch-size must be at least 1, not {args.batch_size}")
    set_threads(args)
    out = args.out
    if not out.lower().endswith(".csv"):
        raise MtpruneError(f"--out must name a .csv file, not {out!r}")


def set_threads(args) -> None:
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 1:
        raise MtpruneError(f"--threads must be at least 1, not {n}")
    import torch

    torch.set_num_threads(n)


def load_model(args):
    from mtprune.models import load_adapter

    return load_adapter(args.model, device=args.device, trust_remote_code=args.trust_remote_code)


def logger(args):
    if getattr(args, "quiet", False):
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def write_chart(args, fig) -> None:
    """The chart beside the CSV; a PNG failure is one line (exit 2) after the HTML is written."""
    if args.no_plot:
        return
    from pathlib import Path

    from mtprune.plots import save_figure

    base = args.plot or str(Path(args.out).with_suffix(""))
    written = save_figure(fig, base, png=not args.no_png)
    for w in written:
        print(f"wrote {w}", file=sys.stderr)


def register(sub):
    p = sub.add_parser("sweep", help="metric against sparsity per task and method (baselines included)",
                       description="One row per task, method, sparsity and trial: the metrics of the task "
                                   "with the method's mask. Rows already in --out with the same key are reused.")
    from mtprune.experiments.sweep import DEFAULT_METHODS, SETTINGS
    from mtprune.tasks import BENCHMARK

    p.add_argument("--tasks", default=",".join(BENCHMARK), help="comma-separated tasks (default: the benchmark)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated: ap, ig, activation, random, magnitude, random-label, svd")
    p.add_argument("--sparsities", default="0:1:0.1", help="start:stop:step (stop included) or a list")
    p.add_argument("--units", default="ffn", choices=("ffn", "heads", "all"), help="what to prune (default ffn)")
    p.add_argument("--scope", default="layer", choices=("layer", "global"),
                   help="the same rate in every layer (default), or one ranking per unit group")
    p.add_argument("--stack", default="all", choices=("encoder", "decoder", "all"),
                   help="prune the encoder, the decoder or both (T5; default all)")
    p.add_argument("--samples", default=None,
                   help="examples for attribution, or a list (default 256; low-resource: 10,100,1000)")
    p.add_argument("--trials", type=int, default=5,
                   help="trials of random, random-label and activation, and of ap and ig with --sample-trials "
                        "(default 5)")
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
    from mtprune.experiments.core import parse_ints, parse_methods, parse_sparsities, parse_tasks
    from mtprune.experiments.sweep import SweepConfig, setting_config

    tasks = tuple(t.name for t in parse_tasks(args.tasks))
    methods = tuple(parse_methods(args.methods))
    sparsities = tuple(parse_sparsities(args.sparsities))
    if args.trials < 1:
        raise MtpruneError(f"--trials must be at least 1, not {args.trials}")
    if args.steps < 1:
        raise MtpruneError(f"--steps must be at least 1, not {args.steps}")
    if args.seed < 0:
        raise MtpruneError(f"--seed must be 0 or more, not {args.seed}")
    base = SweepConfig(tasks=tasks, methods=methods, sparsities=sparsities, units=args.units, scope=args.scope,
                       stack=args.stack,
                       trials=args.trials, variant=args.variant, seed=args.seed, steps=args.steps,
                       sample_trials=args.sample_trials)
    overrides = {}
    if args.samples is not None:
        overrides["samples"] = tuple(parse_ints(args.samples, "--samples"))
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
    from mtprune.experiments.core import fmt_seconds
    from mtprune.experiments.sweep import format_summary, summarize

    check_common(args)
    cfg = build_config(args)
    if args.metric not in ("accuracy", "f1", "mcc"):
        raise MtpruneError(f"--metric must be accuracy, f1 or mcc, not {args.metric!r}")
    pairs = parse_compare(args.compare)
    for name in {n for pair in pairs for n in pair}:  # before any work: a method this sweep runs
        if name.split(" ")[0] not in cfg.methods:
            raise MtpruneError(f"--compare names {name!r}, which this sweep does not run (methods: "
                               f"{', '.join(cfg.methods)})")
    adapter = load_model(args)
    import time

    t0 = time.perf_counter()
    df = run_sweep_cli(adapter, cfg, args)
    seconds = time.perf_counter() - t0
    print(f"wrote {len(df)} rows to {args.out} ({fmt_seconds(seconds)})", file=sys.stderr)
    d = df.dropna(subset=[args.metric])
    if d.empty:
        raise MtpruneError(f"no task of this sweep has the metric {args.metric!r}")
    lo, hi = 0.1, 0.9
    if not ((d["sparsity"] >= lo - 1e-9) & (d["sparsity"] <= hi + 1e-9)).any():
        lo, hi = float(d["sparsity"].min()), float(d["sparsity"].max())
    table = summarize(d, args.metric, lo, hi)
    print(f"mean {args.metric} over sparsities {lo:g}-{hi:g}:")
    print(format_summary(table))
    if pairs:
        from mtprune.experiments.sweep import compare, format_compare

        for a, b in pairs:
            print(f"\n{a} - {b}, mean {args.metric} over sparsities {lo:g}-{hi:g}:")
            print(format_compare(compare(d, a, b, args.metric, lo, hi)))
    if not args.no_plot:
        from mtprune.plots import sweep_figure

        title = f"{args.metric} against sparsity ({cfg.units}, {cfg.scope} rate, {adapter.display_name})"
        write_chart(args, sweep_figure(d, args.metric, title=title))
    return 0


def run_sweep_cli(adapter, cfg, args):
    from mtprune.experiments.sweep import run_sweep

    return run_sweep(adapter, cfg, out=args.out, limit=args.limit, split=args.split, batch_size=args.batch_size,
                     resume=not args.no_resume, log=logger(args), prune=args.prune)
