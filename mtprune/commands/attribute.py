"""``mtprune attribute``: score every prunable unit of a model for one task, through the cache.

Runs under torchrun too (``torchrun --nproc_per_node N -m mtprune attribute ...``): the examples
are split across the ranks, their sums all-reduced; only rank 0 writes and prints.
"""

import os
import time
from pathlib import Path

from mtprune.commands.common import (add_examples_arg, add_model_args, add_threads_arg, method_help, print_json,
                                     progress_bar, quiet_openmp, reliability_line)
from mtprune.errors import MtpruneError
from mtprune.units import canonical_kinds


def register(sub):
    p = sub.add_parser(
        "attribute",
        help="score every FFN neuron and attention head by how much a task needs it",
        description="Score every prunable unit (FFN neurons, attention heads) of a model for one task. "
        "Results are cached (MTPRUNE_CACHE or cache/): an identical request is a cache hit.",
    )
    add_model_args(p)
    p.add_argument("--method", default="ap", help=f"default ap. {method_help()}")
    p.add_argument("--variant", default="abs", help="abs or signed: sum |A| or A over examples (default abs)")
    # auto: at 256 examples the maps agree with another draw's at 0.71-0.84 (README: How far the scores can be
    # trusted); auto reaches 0.9 (sst2: 1,024-2,048 examples)
    add_examples_arg(p, "auto", "examples, class-balanced", auto=True)
    p.add_argument("--seed", type=int, default=0, help="seed of the example draw / random scores (default 0)")
    p.add_argument("--split", default=None, help="default: the task's train split")
    p.add_argument("--steps", type=int, default=20, help="Integrated Gradients steps (ig only; default 20)")
    p.add_argument("--unsupervised", action="store_true",
                   help="use no labels: sum |A| over every candidate label (ap, ig)")
    p.add_argument("--kinds", "--units", dest="kinds", default="all", choices=("all", "ffn", "heads", "kv"),
                   type=canonical_kinds,
                   help="score FFN neurons, heads, key/value groups (kv) or all (default all; --units is the old "
                        "spelling, and groups of kv)")
    p.add_argument("--batch-size", type=int, default=32)
    add_threads_arg(p)
    p.add_argument("--cache-dir", default=None, help="default: MTPRUNE_CACHE or cache/ in the checkout")
    p.add_argument("--out-csv", default=None, help="also write the scores as CSV (group, layer, unit, score, rank)")
    p.add_argument("--out-safetensors", default=None, help="also write the scores as safetensors (+ JSON metadata)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _check_out(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise MtpruneError(f"{flag} {path} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise MtpruneError(f"{flag} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MtpruneError(f"{flag} {path}: the folder {parent} is not writable")
    return p


def _scores(adapter, spec, args, progress):
    """``(scores, hit, path, AutoExamples or None)``: the spec's scores, or with ``--examples auto``
    those of the smallest draw that reaches ``--reliability``."""
    from mtprune.attribution import attribute_cached
    from mtprune.examples_auto import attribute_auto

    if args.examples == "auto":
        return attribute_auto(adapter, spec, args.reliability, args.max_examples, progress=progress,
                              batch_size=args.batch_size, cache_dir=args.cache_dir)
    return (*attribute_cached(adapter, spec, progress=progress, batch_size=args.batch_size,
                              cache_dir=args.cache_dir), None)


def run(args):
    quiet_openmp()
    from mtprune import distributed

    device = distributed.init_from_env(args.device)  # no-op without torchrun
    try:
        return _run(args, device)
    except MtpruneError:
        if not distributed.is_main():
            raise SystemExit(2)  # rank 0 says it once
        raise
    finally:
        distributed.destroy()


def _run(args, device):
    from mtprune import distributed
    from mtprune.attribution import AttributionSpec, check_supported
    from mtprune.cache import DiskCache
    from mtprune.checkpoints import load_adapter
    from mtprune.examples_auto import FIRST, check_auto

    main = distributed.is_main()
    # everything the user can get wrong is checked before the model loads and anything is written
    auto = args.examples == "auto"
    if auto:
        check_auto(args.reliability, args.max_examples)
    spec = AttributionSpec(task=args.task, method=args.method, variant=args.variant,
                           examples=FIRST if auto else args.examples, seed=args.seed, split=args.split,
                           steps=args.steps, unsupervised=args.unsupervised, kinds=args.kinds)
    if args.batch_size < 1:
        raise MtpruneError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise MtpruneError(f"--threads must be at least 1, not {args.threads}")
    out_csv = _check_out(args.out_csv, "--out-csv")
    out_st = _check_out(args.out_safetensors, "--out-safetensors")
    DiskCache(args.cache_dir, namespace="scores").ensure_writable()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = load_adapter(args.model, device=device, trust_remote_code=args.trust_remote_code,
                           precision=args.precision)
    check_supported(adapter, spec)  # a task the model has no labels for
    # too many samples for the split is found while drawing them, before any compute or write

    t0 = time.perf_counter()
    with progress_bar(f"attribute {spec.task} {spec.method}", enabled=main and not args.json) as progress:
        scores, hit, path, chosen = _scores(adapter, spec, args, progress)
    seconds = time.perf_counter() - t0
    if not main:
        return 0
    if out_st is not None:
        scores.save(out_st)
    if out_csv is not None:
        scores.to_csv(out_csv)
    info = {
        "path": str(path),
        "seconds": round(seconds, 4),
        "cache_hit": hit,
        "task": spec.task,
        "split": spec.resolved_split if spec.info.needs_data else None,
        "method": spec.method,
        "variant": spec.variant if spec.info.uses_variant else None,
        "examples": scores.meta.get("examples", spec.examples) if spec.info.needs_data else 0,
        "seed": spec.seed,
        "steps": spec.steps if spec.info.uses_steps else None,
        "unsupervised": spec.unsupervised,
        "kinds": spec.kinds,
        "model": adapter.display_name,
        "model_fingerprint": scores.model_fingerprint,
        "groups": {g: list(a.shape) for g, a in scores.arrays.items()},
        "compute_seconds": scores.seconds,
        "world_size": distributed.world_size(),
        "threads": torch.get_num_threads(),
        "out_csv": str(out_csv) if out_csv else None,
        "out_safetensors": str(out_st) if out_st else None,
        **scores.reliability_summary(),
        "auto": chosen.to_dict() if chosen else None,
    }
    if args.json:
        print_json(info)
    else:
        shapes = ", ".join(f"{g} {a.shape[0]}x{a.shape[1]}" for g, a in scores.arrays.items())
        how = "cache hit" if hit else f"computed in {scores.seconds:.1f} s"
        print(f"scores: {path}")
        print(f"{spec.task} {spec.method}  {shapes}  ({seconds:.2f} s, {how})")
        if chosen is not None:
            print(f"examples auto: {chosen.describe()}")
        print(reliability_line(scores))
        for label, p in (("csv", out_csv), ("safetensors", out_st)):
            if p is not None:
                print(f"{label}: {p}")
    return 0
