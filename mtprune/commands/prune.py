"""``mtprune prune``: scores -> mask -> hard-pruned model directory (with its mask)."""

from pathlib import Path

from mtprune.commands.common import (add_examples_arg, add_kinds_arg, add_model_args, add_repair_arg, measure_help,
                                     method_help, print_json, progress_bar, repair_settings)
from mtprune.costs import KIND_NORMALISATIONS
from mtprune.errors import MtpruneError
from mtprune.rearrange import EXAMPLES as REARRANGE_EXAMPLES


# The defaults chosen by benchmarks/bench_frontier.py (README, "Budgets and repair"): one FLOPs
# budget over heads and neurons, then a least-squares repair.
DEFAULT_BUDGET = "flops:0.5"
DEFAULT_REPAIR = "lsq"


def register(sub):
    p = sub.add_parser(
        "prune",
        help="hard-prune a model for a task and save it (mtprune eval --model DIR reads it)",
        description="Score units for a task (or read a mask), keep the top 1 - sparsity, slice the "
        "model's Linear layers and write the smaller model, with its mask, to --out.",
    )
    add_model_args(p)
    p.add_argument("--method", default="ap", help=f"attribution method (default ap). {method_help()}")
    p.add_argument("--variant", default=None, help="the method's variant (default: the method's own)")
    p.add_argument("--sparsity", default=None,
                   help="fraction of units to prune in every layer, in [0, 1] (instead of --budget)")
    p.add_argument("--budget", default=None,
                   help=f"spend one budget over heads and FFN neurons of all layers, a measure and the share of it "
                        f"kept: {measure_help()}; default {DEFAULT_BUDGET} when neither --sparsity nor --mask is "
                        f"given".replace("%", "%%"))
    p.add_argument("--rearrange", action="store_true",
                   help="--budget: re-choose the units each layer prunes so that their gradients cancel (Kwon et "
                        "al.'s mask rearrangement; the same count per layer, so the budget stays met)")
    p.add_argument("--rearrange-examples", type=int, default=REARRANGE_EXAMPLES,
                   help=f"--rearrange: labelled rows of the split the scores come from (default {REARRANGE_EXAMPLES})")
    p.add_argument("--normalise", default="sum", choices=KIND_NORMALISATIONS,
                   help="--budget: divide each kind's scores by their sum (default) or compare them as they are")
    add_repair_arg(p, None, default_text=f"{DEFAULT_REPAIR} (none, said so, when the task has no rows to calibrate on)",
                   variants=True)
    p.add_argument("--calib", type=int, default=1024, help="calibration rows for --repair (default 1024)")
    p.add_argument("--calib-split", default=None, help="the split calibration rows come from (default: train)")
    p.add_argument("--calib-file", default=None, action="append",
                   help="calibration rows from a JSONL file of the task's fields instead (no labels needed); "
                        "repeat it for several files, in equal shares")
    p.add_argument("--calib-mix", default=None, metavar="SOURCE:WEIGHT,...",
                   help="calibration rows from several sources in proportion to their weights: 'task' (the "
                        "task's --calib-split), a task's split (imdb/test) or a JSONL file, as "
                        "task:0.5,imdb/test:0.5 (the deployment domain's own text, no labels needed)")
    add_kinds_arg(p, None, "ffn with --sparsity, all with --budget")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="layer: the same sparsity in every layer (default); global: top units of the model")
    p.add_argument("--stack", choices=("encoder", "decoder", "all"), default="all")
    add_examples_arg(p, 256, auto=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="split to draw attribution examples from")
    p.add_argument("--mask", default=None, help="use this mask file (.json/.safetensors) instead of scoring")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="stored weight dtype; auto: the source model's (float16 for the default model)")
    p.add_argument("--out", required=True, help="output directory for the pruned model")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-eval", action="store_true",
                   help="do not measure the pruned model (by default it is evaluated on the task's validation "
                        "split and the accuracy, with its interval, is stored with it)")
    p.add_argument("--eval-limit", type=int, default=None, help="measure on the first N validation rows only")
    p.add_argument("--onnx", action="store_true",
                   help="also export the pruned model and the task's head to OUT/onnx/ (see mtprune export)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    from mtprune.checkpoints import load_adapter
    from mtprune.pipeline import prune

    task, settings, spec, given = _read_args(args)
    if args.rearrange and given is not None and not given.meta.get("budget"):
        raise MtpruneError(f"--rearrange re-chooses the units a budget's mask prunes, and {args.mask} has no budget "
                           "(make it with --budget)")
    adapter = load_adapter(args.model, device=args.device, trust_remote_code=args.trust_remote_code,
                           precision=args.precision)
    adapter.head_for(task)
    info = {"task": task.name, "model": adapter.source}
    scores = None
    if given is not None:
        given.check_matches(adapter)
        info.update(mask_source=str(args.mask))
    else:
        scores, info["scores_cache"], info["cache_hit"], info["scores_reliability"] = _scores(adapter, spec, args)
    with progress_bar(f"repair ({settings['repair'].solver})", unit="layer",
                      enabled=not args.json and settings["repair"].solver != "none") as pr:
        done = prune(adapter, task, scores=scores, mask=given, sparsity=settings["sparsity"], budget=settings["budget"],
                     kinds=settings["kinds"], scope=args.scope, stack=args.stack, normalise=args.normalise,
                     repair_with=settings["repair"], calibration=settings["calibration"],
                     meta={"task": task.name, "model": adapter.source,
                           **({"scores_reliability": info["scores_reliability"]} if scores is not None else {})},
                     progress=pr, rearrange_rows=_rearrange_rows(task, args) if args.rearrange else None)
    measured = _save_and_measure(adapter, done, task, settings["out"], args, info)
    _print(info, done, measured, task, args)
    return 0


def _read_args(args):
    """Everything checked before the model loads: ``(task, settings, attribution spec, given mask)``."""
    from mtprune.attribution import AttributionSpec
    from mtprune.calibration import parse_mix
    from mtprune.checkpoints import check_out_dir
    from mtprune.costs import Budget
    from mtprune.experiments.core import check_at_least
    from mtprune.masks import check_sparsity, load_mask
    from mtprune.examples_auto import FIRST, check_auto
    from mtprune.pipeline import plan_calibration
    from mtprune.tasks import get_task

    task = get_task(args.task)
    given_ways = [w for w in ("sparsity", "budget", "mask") if getattr(args, w) is not None]
    if len(given_ways) > 1:
        raise MtpruneError(f"give one of --sparsity, --budget and --mask, not {' and '.join('--' + w for w in given_ways)}")
    p = check_sparsity(args.sparsity) if args.sparsity is not None else None
    # with none of the three, the defaults the frontier benchmark chose (README: Budgets and repair)
    budget_text = args.budget if given_ways else DEFAULT_BUDGET
    budget = Budget.parse(budget_text) if budget_text is not None else None
    check_at_least(args.batch_size, "--batch-size")
    if args.rearrange:
        check_at_least(args.rearrange_examples, "--rearrange-examples")
        if p is not None:
            raise MtpruneError("--rearrange re-chooses the units a budget's mask prunes: give --budget, not --sparsity")
    if args.examples == "auto":
        check_auto(args.reliability, args.max_examples)
    if args.eval_limit is not None:
        check_at_least(args.eval_limit, "--eval-limit")
    if (args.repair or DEFAULT_REPAIR) != "none":
        check_at_least(args.calib, "--calib")
    try:
        out = check_out_dir(Path(args.out), args.overwrite)
    except MtpruneError:
        raise MtpruneError(f"--out {args.out} exists and is not an empty directory (pass --overwrite to replace it)") \
            from None
    # bad files and settings fail before the model loads
    given = load_mask(args.mask) if args.mask else None
    kinds = args.kinds or ("all" if budget is not None else "ffn")
    spec = None if given is not None else AttributionSpec(
        task=task.name, method=args.method, examples=FIRST if args.examples == "auto" else args.examples,
        seed=args.seed, split=args.split,
        kinds="all" if budget is not None else kinds, **({"variant": args.variant} if args.variant else {}))
    mix = parse_mix(task, args.calib_mix, args.calib_file, args.calib, args.calib_split) \
        if args.calib_mix is not None or args.calib_file else None
    calib = plan_calibration(task, args.repair, DEFAULT_REPAIR, args.calib, args.calib_split, mix=mix)
    settings = {"sparsity": p if given is None and budget is None else None,
                "budget": budget if given is None else None, "kinds": kinds, "out": out, "calibration": calib,
                "repair": repair_settings(args, calib.solver, batch_size=args.batch_size)}
    if settings["repair"].refits and settings["repair"].target == "intermediate" and (given is not None or budget is None):
        raise MtpruneError("--repair-variant intermediate fits to the mask of the same scores at the square root of the "
                           "budget: give --budget, not --mask or --sparsity")
    return task, settings, spec, given


def _rearrange_rows(task, args) -> list[dict]:
    """The labelled rows whose mini-batch gradients --rearrange reads (the seed's draw of the split
    the scores come from)."""
    from mtprune.rearrange import rearrange_rows

    return rearrange_rows(task, args.rearrange_examples, args.seed, args.split)


def _scores(adapter, spec, args):
    """``(scores, cache path, cache hit, reliability summary)``; with ``--examples auto``, those of
    the smallest draw that reaches ``--reliability``."""
    from mtprune.commands.common import reliability_line
    from mtprune.examples_auto import attribute_auto
    from mtprune.attribution import attribute_cached

    with progress_bar(f"attribute {spec.task} ({spec.method})", enabled=not args.json) as progress:
        if args.examples == "auto":
            scores, hit, path, chosen = attribute_auto(adapter, spec, args.reliability, args.max_examples,
                                                       progress=progress, batch_size=args.batch_size)
        else:
            (scores, hit, path), chosen = attribute_cached(adapter, spec, progress=progress,
                                                           batch_size=args.batch_size), None
    if not args.json:
        if chosen is not None:
            print(f"examples auto: {chosen.describe()}")
        print(reliability_line(scores))
    return scores, str(path) if path else None, bool(hit), scores.reliability_summary()


def _save_and_measure(adapter, done, task, out, args, info: dict) -> dict:
    """The pruned model measured on the task (unless --no-eval; ``{task: EvalResult}`` returned),
    saved to ``out`` (and exported to ONNX with --onnx); ``info`` gets what --json says of it."""
    from mtprune.checkpoints import load_adapter, save_model, source_dtype
    from mtprune.pipeline import flops_kept
    from mtprune.pruning import count_parameters

    small, mask = done.adapter, done.mask
    measured = {}
    if not args.no_eval:
        from mtprune.evaluation import evaluate

        with progress_bar(f"measure {task.name}", enabled=not args.json) as pr:
            measured[task.name] = evaluate(small, task, limit=args.eval_limit, batch_size=args.batch_size, progress=pr)
    dtype = source_dtype(adapter) if args.dtype == "auto" else args.dtype
    save_model(small.to("cpu"), out, mask=mask, dtype=dtype, overwrite=args.overwrite, measured=measured)
    size = sum(f.stat().st_size for f in out.iterdir() if f.suffix == ".safetensors")
    if args.onnx:  # from the directory just written: the weights as stored
        from mtprune.export import export_onnx

        onnx_dir = export_onnx(load_adapter(str(out)), task, out / "onnx", evaluate=not args.no_eval,
                               evaluate_limit=args.eval_limit, log=(lambda m: None) if args.json else print)
        info["onnx"] = str(onnx_dir)
    info.update(
        notes=list(done.notes), out=str(out), sparsity=mask.sparsity, scope=mask.scope, kinds=mask.kinds,
        stack=mask.stack, budget=mask.meta.get("budget"), flops_kept=flops_kept(adapter, task, mask),
        params_dense=done.params_dense, params_pruned=done.params_pruned,
        params_expected=count_parameters(adapter, mask), bytes_safetensors=size, dtype=dtype or "float32",
        kept={g: mask.kept_per_layer(g) for g in mask.groups}, repair=done.report.to_dict(),
        rearranged=mask.meta.get("rearranged"),
        measured={t: r.to_dict() for t, r in measured.items()},
    )
    return measured


def _print(info: dict, done, measured: dict, task, args) -> None:
    if args.json:
        print_json(info)
        return
    mask = done.mask
    kept = "; ".join(f"{g} {'/'.join(map(str, v))}" for g, v in info["kept"].items())
    how = f"budget {mask.meta['budget']}" if mask.scope == "budget" else f"{mask.sparsity:g} ({mask.kinds}, {mask.scope})"
    print(f"pruned {task.name} at {how}: {done.params_dense:,} -> {info['params_pruned']:,} parameters, "
          f"{info['flops_kept']:.3f} of the prunable FLOPs kept; kept per layer: {kept}")
    moved = mask.meta.get("rearranged")
    if moved:
        print(f"rearranged: {moved['units_moved']} unit(s) swapped within their layers, from the gradients of "
              f"{moved['rows']} rows in mini-batches of {moved['mini_batch']}")
    for n in info["notes"]:
        print(n)
    print(done.report.summary())
    if done.report.calibration is not None:
        from mtprune.calibration import summary_line

        print(summary_line(done.report.calibration))
    for t, r in measured.items():
        print(f"measured on {t}/{r.split}: accuracy {r.describe()}")
    out = info["out"]
    print(f"wrote {out} ({info['bytes_safetensors'] / 1e6:.1f} MB of weights); evaluate: mtprune eval --model {out} "
          f"--task {task.name}")
