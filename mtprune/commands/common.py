"""What the verbs share: their common arguments (with the old spellings as aliases), reading
them into library objects, progress bars, JSON output and charts.

Building the parser imports no torch: the method list and help come from :mod:`mtprune.methods`,
which loads torch only when a method runs.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from mtprune.errors import MtpruneError


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=None, default=str)
    sys.stdout.write("\n")


# ----------------------------------------------------------------------------------------------
# arguments


def add_model_args(p, task: bool = True) -> None:
    p.add_argument("--model", default="default", help="default, a local model directory or a hub id")
    if task:
        p.add_argument("--task", required=True, help="a task name (see `mtprune tasks`)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="the dtype the model computes in (scores are summed in float32 or better whatever "
                        "it is); auto: float32 on the CPU, the checkpoint's half precision on a GPU")
    p.add_argument("--trust-remote-code", action="store_true", help="allow code shipped with a hub model")


def add_threads_arg(p) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy machine)")


def add_examples_arg(p, default: int | str | None = 256, text: str = "examples for attribution",
                     auto: bool = False, many: bool = False) -> None:
    """``--examples`` (``--samples``: the old spelling); with ``auto``, also the word ``auto`` (draw
    more examples until the scores are reliable: ``--reliability``, ``--max-examples``); with
    ``many``, a comma-separated list (read as text, parsed by the experiment's config)."""
    from mtprune.examples_auto import DEFAULT_CAP, DEFAULT_TARGET

    p.add_argument("--examples", "--samples", dest="examples", default=default,
                   type=str if many else parse_examples if auto else int if isinstance(default, int) else str,
                   help=f"{text}{'; auto: double them from 64 until the scores are reliable' if auto else ''} "
                        f"(default {default}; --samples is the old spelling)")
    if auto:
        p.add_argument("--reliability", type=float, default=DEFAULT_TARGET,
                       help=f"--examples auto: the reliability every kind must reach, the expected Spearman "
                            f"correlation of its scores with another draw's, in (0, 1) (default {DEFAULT_TARGET})")
        p.add_argument("--max-examples", type=int, default=DEFAULT_CAP,
                       help=f"--examples auto: at most this many (default {DEFAULT_CAP}, or the split's rows)")


def parse_examples(text: str):
    """``auto`` or a count."""
    import argparse

    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--examples is a count or auto, not {text!r}") from None


def add_kinds_arg(p, default: str | None = "ffn", default_text: str | None = None) -> None:
    from mtprune.units import KIND_CHOICES, canonical_kinds

    p.add_argument("--kinds", "--units", dest="kinds", default=default, choices=KIND_CHOICES, type=canonical_kinds,
                   help=f"which kind of unit to prune: FFN neurons, attention heads, key/value groups (kv, grouped-"
                        f"query attention) or all (on a grouped model: neurons and groups; its single query "
                        f"heads only by name, as a soft mask) (default {default_text or default}; --units is "
                        f"the old spelling, and groups of kv)")


def method_help(scores: bool | None = True) -> str:
    """``ap`` (gradient x activation...), ... from the registry: the CLI's list of methods."""
    from mtprune.methods import all_methods

    return "; ".join(f"{m.name}: {m.help}" for m in all_methods().values() if scores is None or m.scores == scores)


REPAIR_WHAT = "refit each pruned block's output projection on calibration rows so its output matches the dense model's"


def add_repair_arg(p, default: str | None = "none", what: str = "", many: bool = False,
                   default_text: str | None = None, variants: bool = False) -> None:
    """``--repair``: a registered solver (:mod:`mtprune.solvers`), or with ``many`` a comma-separated
    list of them; the choices and help come from the registry. ``variants``: also
    ``--repair-variant`` and ``--calib-tokens`` (read by :func:`repair_settings`)."""
    from mtprune.solvers import all_solvers

    solvers = all_solvers()
    listed = "; ".join(f"{s.name}: {s.help}" for s in solvers.values())
    p.add_argument("--repair", default=default, choices=None if many else list(solvers),
                   help=f"{what or REPAIR_WHAT}{', comma-separated' if many else ''} ({listed}); default "
                        f"{default_text or default}")
    if variants:
        from mtprune.repair import CALIB_TOKENS, VARIANTS

        p.add_argument("--repair-variant", default="standard", metavar="NAME[,NAME]",
                       help=f"how the layers are fit, one or several of {', '.join(VARIANTS)} (pooled-last: the last "
                            "layer fits only the token the classifier reads; intermediate: the target is the mask at "
                            "the square root of the budget; skip-first-attention: the first layer's attention is left "
                            "as pruned; kwon: all three, as Kwon et al.'s code); default standard")
        p.add_argument("--calib-tokens", default=str(CALIB_TOKENS), metavar="N|all",
                       help=f"read calibration rows up to N tokens (bounds the repair's time and memory; rows spread "
                            f"over the draw), or all; default {CALIB_TOKENS}")


def repair_settings(args, solver: str, **kw):
    """:class:`mtprune.repair.RepairSettings` of ``--repair-variant`` and ``--calib-tokens``."""
    from mtprune.repair import RepairSettings

    text = str(args.calib_tokens).strip().lower()
    if text == "all":
        tokens = None
    else:
        try:
            tokens = int(text)
        except ValueError:
            raise MtpruneError(f"--calib-tokens is a whole number of tokens or all, not {args.calib_tokens!r}") from None
        if tokens < 1:
            raise MtpruneError(f"--calib-tokens must be at least 1, not {tokens}")
    return RepairSettings.of(solver, args.repair_variant, max_tokens=tokens, **kw)


def measure_help() -> str:
    """``flops:0.6 (multiply-adds ...), params:0.6 (...)``: the registered budget measures."""
    from mtprune.measures import all_measures

    return ", ".join(f"{m.name}:0.6 ({m.help})" for m in all_measures().values())


def add_experiment_args(p, out_default: str) -> None:
    """What every experiment verb shares: model, evaluation size, output, resume, chart."""
    add_model_args(p, task=False)
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


# ----------------------------------------------------------------------------------------------
# reading them


def set_threads(args) -> None:
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 1:
        raise MtpruneError(f"--threads must be at least 1, not {n}")
    import torch

    torch.set_num_threads(n)


def check_out_csv(path: str) -> None:
    if not str(path).lower().endswith(".csv"):
        raise MtpruneError(f"--out must name a .csv file, not {path!r}")


def eval_settings(args):
    """The experiment's :class:`~mtprune.experiments.EvalSettings` from the common arguments; sets
    the thread count and checks ``--out`` (before any model loads)."""
    from mtprune.experiments import EvalSettings

    settings = EvalSettings(limit=args.limit, split=getattr(args, "split", None), batch_size=args.batch_size,
                            prune=getattr(args, "prune", "soft"))
    set_threads(args)
    check_out_csv(args.out)
    return settings


def load_model(args):
    """The model of ``--model`` on ``--device``; under torchrun, this rank joins the process group
    first and takes its own device (cuda:LOCAL_RANK, or the CPU)."""
    from mtprune import distributed
    from mtprune.checkpoints import load_adapter

    device = distributed.init_from_env(args.device)  # a no-op without torchrun
    return load_adapter(args.model, device=device, trust_remote_code=args.trust_remote_code,
                        precision=getattr(args, "precision", "float32"))


def logger(args):
    from mtprune import distributed

    if getattr(args, "quiet", False) or not distributed.is_main():
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def quiet_openmp() -> None:
    """OpenMP threads that spin while waiting make a busy machine several times slower (2 threads:
    24 s, 1 thread: 4 s for the same ap on 2 shared cores); sleeping waiters cost nothing when the
    cores are free. Read when torch loads, so call before the first import of torch."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@contextmanager
def progress_bar(desc: str, unit: str = "ex", enabled: bool = True, total: int | None = None):
    """A tqdm bar on stderr; yields ``progress(done, total)`` for the library's callbacks."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None if enabled else True, leave=False)
    last = [0]

    def progress(done, total, *_):
        if bar.total != total:
            bar.total = total
        bar.update(done - last[0])
        last[0] = done

    try:
        yield progress
    finally:
        bar.close()


def write_chart(args, fig, base: str | None = None) -> None:
    """The chart beside the CSV; a PNG failure is one line (exit 2) after the HTML is written."""
    if args.no_plot:
        return
    from mtprune.plots import save_figure

    base = base or args.plot or str(Path(args.out).with_suffix(""))
    for w in save_figure(fig, base, png=not args.no_png):
        print(f"wrote {w}", file=sys.stderr)


def reliability_line(scores) -> str:
    """``reliability (expected Spearman with another draw of 256 examples): ffn 0.80 (layers
    0.71-0.86), heads 0.73``, with a plain warning under 0.8; or why it is unknown."""
    summary = scores.reliability_summary()
    if summary["reliability"] is None:
        return summary["why"]
    from mtprune.reliability import short_names

    parts, low = [], []
    rel = scores.reliability()
    name = short_names(rel)
    for g, r in rel.items():
        layers = [v for v in r.per_layer if v == v]
        span = f" (layers {min(layers):.2f}-{max(layers):.2f})" if len(layers) > 1 else ""
        parts.append(f"{name[g]} {r.spearman:.2f}{span}")
        if r.spearman < 0.8:
            low.append(name[g])
    text = (f"reliability (expected Spearman correlation with another draw of {summary['examples']:,} "
            f"examples): {', '.join(parts)}")
    if low:
        text += (f". Under 0.8 for {', '.join(low)}: another draw would rank these units differently; "
                 f"use more examples (--examples auto)")
    return text
