"""``mtprune explain``: one sentence (or pair) through the dense, pruned and repaired model, with
the words and the units that carry the prediction."""

from mtprune.commands.common import add_model_args, add_repair_arg, print_json, progress_bar
from mtprune.errors import MtpruneError


def register(sub):
    p = sub.add_parser(
        "explain", help="what the dense and the pruned model say of your sentence, and which words and units carry it",
        description="Run one sentence (two for pair tasks) through the model, and with --mask through the "
        "pruned (and with --repair the repaired) model: every label's probability, each word's "
        "attribution to the dense model's prediction (integrated gradients), and per layer the units "
        "that carry it, with their rank in the task's cached attribution scores.")
    add_model_args(p)
    p.add_argument("texts", nargs="*", metavar="TEXT", help="the sentence; pair tasks take two (quote each)")
    p.add_argument("--mask", default=None, help="a mask file (.json/.safetensors, as mtprune prune writes)")
    add_repair_arg(p, "none", what="also refit the pruned model on calibration rows (needs --mask)")
    p.add_argument("--calib", type=int, default=1024, help="calibration rows for --repair (default 1024)")
    p.add_argument("--top", type=int, default=5, help="units shown per layer and kind (default 5)")
    p.add_argument("--steps", type=int, default=20, help="integration steps of the word attributions (default 20)")
    p.add_argument("--method", default="ap",
                   help="whose cached scores give the units' ranks and reliability (default ap; none cached: "
                        "reliability unknown)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args):
    from mtprune.checkpoints import load_adapter
    from mtprune.experiments.core import check_at_least
    from mtprune.explain import cached_scores, check_texts, explain, repair_for
    from mtprune.masks import load_mask
    from mtprune.tasks import get_task

    task = get_task(args.task)
    texts = check_texts(task, args.texts)
    check_at_least(args.top, "--top")
    check_at_least(args.steps, "--steps")
    if args.repair != "none":
        if not args.mask:
            raise MtpruneError(f"--repair {args.repair} refits a pruned model: give its --mask too")
        check_at_least(args.calib, "--calib")
    mask = load_mask(args.mask) if args.mask else None
    adapter = load_adapter(args.model, device=args.device, trust_remote_code=args.trust_remote_code,
                           precision=args.precision)
    adapter.head_for(task)
    if mask is not None:
        mask.check_matches(adapter)
    repaired = None
    if args.repair != "none":
        with progress_bar(f"repair ({args.repair})", unit="layer", enabled=not args.json) as pr:
            repaired = repair_for(adapter, task, mask, args.repair, args.calib, progress=pr)
    res = explain(adapter, task, texts, mask=mask, repaired=repaired, scores=cached_scores(adapter, task, args.method),
                  top=args.top, steps=args.steps)
    if args.json:
        print_json(res.to_dict())
    else:
        print("\n".join(describe(res)))
    return 0


def describe(res) -> list[str]:
    """The explanation as lines of text."""
    lines = [f"{res.task}: {' || '.join(repr(t) for t in res.texts)} ({res.n_tokens} tokens)"]
    lines += [f"note: {n}" for n in res.notes]
    for p in res.predictions():
        probs = ", ".join(f"{k} {v:.3f}" for k, v in zip(p.labels, p.probs))
        lines.append(f"{p.model:<9}{p.label} (P {p.p:.3f}; {probs})")
    if res.repair:
        lines.append(f"  {res.repair}")
    ig = res.ig
    lines.append(f"words, integrated gradients of P({res.label}) over {ig['steps']} steps (> 0 raises it, < 0 lowers "
                 f"it); they add up to {ig['sum']:+.3f}, against {ig['p'] - ig['p_baseline']:+.3f} from P "
                 f"{ig['p_baseline']:.3f} with {ig['baseline']} to P {ig['p']:.3f}:")
    for seg in sorted({w.segment for w in res.words}):
        head = f"  text {seg + 1}: " if len(res.texts) > 1 else "  "
        lines.append(head + " ".join(f"{w.text}({_signed(w.score)})" for w in res.words if w.segment == seg))
    lines.append(f"units that carry P({res.label}) for this sentence (h * dP/dh over its tokens); {res.reliability}:")
    for s in res.sites:
        lines.append(f"  {s.site} (top {len(s.top)} of {s.n_units:,}: {s.share:.0%} of the layer's summed |effect|)")
        for u in s.top:
            kept = "" if u.kept is None else ", kept by the mask" if u.kept else ", pruned by the mask"
            lines.append(f"    {u.unit_id:<22}{_signed(u.effect, 4):<9}  {u.reliability_text()}{kept}")
    return lines


def _signed(v: float, digits: int = 3) -> str:
    """``+0.093``; a value that would print as zero in powers of ten (``-3.1e-05``)."""
    return f"{v:+.{digits}f}" if v == 0 or abs(v) >= 0.5 * 10 ** -digits else f"{v:+.1e}"
