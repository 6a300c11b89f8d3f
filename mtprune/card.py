"""The model card (``README.md``) of an exported model: what it is, where it came from, what was
measured on it, and how to load it with and without mtprune.

:func:`model_card` renders a facts dict that :mod:`mtprune.export` gathers from the model's own
config (``mtprune_pruned``: the mask's header, the repair, what was measured) and from its caller
(the FLOPs kept). A number the facts do not hold is written as "not measured", never guessed: the
accuracy is the one measured on this pruned model, with its 95% interval and row count.
"""

from __future__ import annotations

from mtprune.text import human_count, plural
from mtprune.units import KIND_LABELS

KINDS_WORDS = {"ffn": "FFN neurons", "heads": "attention heads", "kv": "key/value groups", "all": "all units"}


def _group_words(group: str) -> str:
    stack, _, kind = group.partition(".")
    return f"{stack} {KIND_LABELS.get(kind, kind)}"


def mask_words(header: dict | None) -> str:
    """The mask's settings in words: ``budget flops:0.5 over heads and FFN neurons of all layers`` or
    ``50% of the FFN neurons pruned in every layer``; its scores' method and examples."""
    if not header:
        return "none: the dense model"
    meta = header.get("meta") or {}
    if meta.get("budget"):
        how = f"budget {meta['budget']}: at most that share of the cost kept, spent over the units of all layers"
    else:
        per = meta.get("sparsity_per_kind") or {header.get("kinds", "ffn"): header.get("sparsity", 0)}
        where = "in every layer" if header.get("scope", "layer") == "layer" else "ranked over all layers (global)"
        how = ", ".join(f"{float(p):.0%} of the {KINDS_WORDS.get(k, k)}" for k, p in per.items() if p or k == "ffn")
        how = f"{how or 'nothing'} pruned {where}"
    spec = meta.get("scores_spec") or {}
    if spec:
        examples = "no examples" if spec.get("method") in ("random", "magnitude") else \
            f"{plural(int(spec.get('examples', 0)), 'example')} of {spec.get('task', '?')}/{spec.get('split') or 'train'}"
        how += f"; units ranked by {spec.get('method', '?')} scores from {examples} (seed {spec.get('seed', 0)})"
    elif meta.get("method"):
        how += f"; units ranked by {meta['method']}"
    reliability = meta.get("scores_reliability")
    if isinstance(reliability, dict) and reliability:
        how += "; reliability of the scores " + ", ".join(
            f"{k} {v:.2f}" for k, v in reliability.items() if isinstance(v, (int, float)))
    return how


def repair_words(repair: dict | None, calibration: str | None = None) -> str:
    """``lsq, 512 calibration rows of sst2/train; 6 of 12 sites refit`` or ``none``."""
    if not repair or repair.get("method") in (None, "none"):
        return "none (the pruned weights as they are)"
    text = f"{repair['method']}, {plural(int(repair.get('calibration_rows', 0)), 'calibration row')}"
    source = calibration
    described = repair.get("calibration")
    if isinstance(described, dict) and described.get("sources"):
        source = ", ".join(f"{s.get('rows', '?')} of {s.get('source', '?')}" for s in described["sources"])
    elif isinstance(described, str):
        source = described
    text += f" ({source})" if source else " (source not recorded)"
    if "sites_refit" in repair and "sites" in repair:
        text += f"; {repair['sites_refit']} of {plural(int(repair['sites']), 'site')} refit"
    return text


def accuracy_words(measured: dict | None, task: str) -> str:
    """``0.891 (95% interval 0.870-0.911) on 872 sst2/validation rows`` or "not measured"."""
    if not measured or measured.get("accuracy") is None:
        return (f"not measured on this model (no number is claimed; measure it with `mtprune eval --model DIR "
                f"--task {task}`)")
    lo, hi = (measured.get("intervals") or {}).get("accuracy", (None, None))
    interval = f" (95% interval {lo:.3f}-{hi:.3f})" if lo is not None else " (interval not recorded)"
    return (f"{measured['accuracy']:.3f}{interval} on {plural(int(measured.get('rows', 0)), 'row')} of "
            f"{task}/{measured.get('split', '?')}, measured on this pruned model")


def _table(facts: dict) -> list[str]:
    rows = [("source model", facts["source"]), ("task", facts["task_line"]), ("format", facts["format_line"]),
            ("mask", mask_words(facts.get("mask"))), ("units kept", facts.get("units_line") or "all"),
            ("repair", repair_words(facts.get("repair"), facts.get("calibration"))),
            ("accuracy", accuracy_words(facts.get("measured"), facts["task"]))]
    dense, kept = facts.get("params_dense"), facts.get("params")
    if kept is not None:
        counted = " with this task's head alone" if facts.get("onnx_ok", True) else ""
        share = f" of {human_count(dense)} ({kept / dense:.1%}) in the source model{counted}" if dense else ""
        rows.append(("parameters", f"{human_count(kept)} ({kept:,}){share}"))
    flops = facts.get("flops_kept")
    rows.append(("FLOPs kept", "not computed" if flops is None else
                 f"{flops:.1%} of the prunable FLOPs (attention heads and FFN neurons, at {facts['task']}'s "
                 "average length)"))
    return ["| | |", "| --- | --- |", *[f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]]


def _example_text(fields: list[str]) -> str:
    return ", ".join(f'"{t}"' for t in ("a fine film", "the plot is told again and again")[: len(fields)])


def _with_mtprune(facts: dict) -> list[str]:
    name, task = facts["name"], facts["task"]
    return ["## Load it with mtprune", "", "```bash", f"mtprune eval --model {name} --task {task}",
            "```", "", "```python", "from mtprune.checkpoints import load_adapter",
            "from mtprune.evaluation import evaluate", "", f'adapter = load_adapter("{name}")',
            f'print(evaluate(adapter, "{task}", limit=200).describe())  # accuracy (95% interval, n)', "```", ""]


def _without_mtprune(facts: dict) -> list[str]:
    name, fields, labels = facts["name"], facts["fields"], facts["labels"]
    out = ["## Load it without mtprune", ""]
    if facts["kind"] == "onnx":
        return out + ["```python", "import numpy as np", "import onnxruntime as ort",
                      "from transformers import AutoTokenizer", "",
                      f'tok = AutoTokenizer.from_pretrained("{name}")',
                      f'session = ort.InferenceSession("{name}/model.onnx")',
                      f'enc = tok({_example_text(fields)}, return_tensors="np", truncation=True)',
                      "feed = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}",
                      "logits = session.run(None, feed)[0]",
                      f"print({labels}[int(logits.argmax(-1)[0])])", "```", ""]
    if facts.get("plain"):
        return out + ["```python", "from transformers import AutoModelForSequenceClassification, AutoTokenizer", "",
                      f'tok = AutoTokenizer.from_pretrained("{name}")',
                      f'model = AutoModelForSequenceClassification.from_pretrained("{name}").eval()',
                      f'logits = model(**tok({_example_text(fields)}, return_tensors="pt")).logits',
                      "print(model.config.id2label[int(logits.argmax(-1)[0])])", "```", ""]
    out.append(facts.get("plain_reason") or "The stock transformers classes cannot build this model.")
    if facts.get("onnx_ok", True):
        out.append(f"Export it to ONNX and run it with onnxruntime alone: `mtprune export --model {name} "
                   f"--task {facts['task']} --format onnx`.")
    return out + [""]


def model_card(facts: dict) -> str:
    """The README.md of an export (facts: see :func:`mtprune.export.card_facts`)."""
    what = "an ONNX graph" if facts["kind"] == "onnx" else "a model directory"
    pruned = "A pruned copy" if facts.get("mask") else "A copy"
    heads = "only that task's head is in it" if facts.get("onnx_ok", True) else \
        "it scores the task's label words, with no task head"
    lines = [f"# {facts['name']}", "",
             f"{pruned} of **{facts['source_name']}** for one task, **{facts['task']}**, as {what}: {heads}. "
             f"Written by mtprune {facts.get('version', '')}.".replace("  ", " "), "",
             *_table(facts), "", *_with_mtprune(facts), *_without_mtprune(facts)]
    notes = facts.get("notes") or []
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(lines)


def units_line(kept: dict[str, int], total: dict[str, int]) -> str:
    """``encoder FFN neurons 4,608 of 9,216 (50%); encoder attention heads 72 of 72``."""
    return "; ".join(f"{_group_words(g)} {kept[g]:,} of {total[g]:,} ({kept[g] / total[g]:.0%})"
                     for g in kept if total.get(g))
