"""Ship a model to where it runs without mtprune: ONNX.

:func:`export_onnx` turns an adapter (dense, hard-pruned or repaired; the multi-task and
sequence-classifier formats) and one task into a directory that any ONNX runtime reads:

* ``model.onnx``: the encoder and the task's head, inputs ``input_ids``, ``attention_mask`` (and
  ``token_type_ids`` where the model has them) with dynamic batch and sequence axes, one output,
  the task's logits. A pruned model exports as it is: every layer's own sizes are constants of the
  graph. (``torch.onnx.export(..., dynamo=True)``.)
* the tokenizer files;
* ``mtprune_onnx.json``: the task, its fields and labels, the graph's inputs, the source model and
  its fingerprint, the mask's settings and repair (a pruned model), the largest difference of the
  graph's logits from PyTorch's on real rows, and the accuracy measured on the exported graph.

Optional and never silent: ``optimize`` (onnxruntime's transformer optimizer, BERT fusions; it
reads each layer's head count from the graph) and ``quantize="int8"`` (dynamic int8 weights); both
are recorded in the JSON and measured like the rest.

The directory is built beside ``out`` and renamed into place: a failure leaves nothing behind.
(:mod:`mtprune.formats.onnxrt` loads it back.)

:func:`export_model` writes the other kind of export: a model directory that serves one task. A
multi-task model keeps only that task's head: it becomes a stock ``*ForSequenceClassification``
(config: labels, ``finetuning_task``; where every layer keeps the same number of FFN neurons and all
heads, ``intermediate_size`` too, so plain transformers loads it) when that computes the same logits,
else a multi-task directory with one head. Both exports are named after the model, the task, the
method, the mask and the repair (:func:`default_name`: ``minilm-l6-mt6-sst2-ap-flops50-lsq``),
carry a model card (``README.md``, :mod:`mtprune.card`) and name the machine's files by their last
part only (:func:`mtprune.masks.portable`): no absolute path of the machine that made them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtprune import io
from mtprune.errors import MtpruneError
from mtprune.formats.onnxrt import META_FILE, META_FORMAT, MODEL_FILE, open_session
from mtprune.masks import portable
from mtprune.tasks import TaskSpec, get_task

FORMATS = ("onnx", "model")  # mtprune export --format
CARD_FILE = "README.md"
QUANTIZE = (None, "int8")
CHECK_ROWS = 16
TOLERANCE = 1e-3  # the largest logit difference from PyTorch an export may have


class _TaskLogits(nn.Module):
    """The adapter's logits for one task as a module of the token tensors (what is exported)."""

    def __init__(self, adapter, task: TaskSpec, names: list[str]):
        super().__init__()
        self.adapter, self.task, self.names = adapter, task, names
        self.model = adapter.model  # registered, so that its weights are the graph's parameters
        heads = getattr(adapter, "task_heads", None)
        if heads is not None:
            self.heads = heads

    def forward(self, *tensors):
        return self.adapter.logits(dict(zip(self.names, tensors)), self.task)


def check_exportable(adapter, task: TaskSpec) -> None:
    from mtprune.formats import ClassifierAdapter, ModelAdapter

    if not isinstance(adapter, ModelAdapter):  # evaluates only (an ONNX export): no torch module to export
        raise MtpruneError("this model is already an ONNX export")
    if not isinstance(adapter, ClassifierAdapter):
        raise MtpruneError(f"ONNX export supports the multi-task and sequence-classifier formats; a {adapter.format} "
                           "model scores label words, which the export does not put in the graph yet")
    adapter.head_for(task)


def _sample_rows(task: TaskSpec) -> list[dict]:
    """Two rows of different lengths (so that no axis is taken for a constant)."""
    short = {f: "a fine film" for f in task.fields}
    long = {f: "the plot of this long film is told again and again, slowly, without care" for f in task.fields}
    return [short, long]


def _check_rows(task: TaskSpec, n: int = CHECK_ROWS) -> list[dict]:
    from mtprune.evaluation import eval_rows

    try:
        return eval_rows(task, None, n)
    except Exception:  # no local data: the sample rows still check the graph
        return _sample_rows(task)


def _pytorch_logits(adapter, task: TaskSpec, rows: list[dict]) -> np.ndarray:
    with torch.inference_mode():
        return adapter.logits(adapter.encode(rows, task), task).float().cpu().numpy()


def _onnx_logits(session, adapter, task: TaskSpec, rows: list[dict]) -> np.ndarray:
    batch = adapter.encode(rows, task)
    feed = {i.name: batch[i.name].cpu().numpy().astype(np.int64) for i in session.get_inputs()}
    return np.asarray(session.run(None, feed)[0], dtype=np.float32)


def _optimize(path: Path, adapter) -> dict:
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = adapter.model.config
    kind = {"bert": "bert", "roberta": "bert", "distilbert": "bert", "electra": "bert"}.get(
        getattr(cfg, "model_type", ""), "bert")
    # num_heads=0 / hidden_size=0: read from the graph, layer by layer (pruned layers differ)
    opt = optimize_model(str(path), model_type=kind, num_heads=0, hidden_size=0, opt_level=1)
    opt.save_model_to_file(str(path))
    return {k: int(v) for k, v in (opt.get_fused_operator_statistics() or {}).items() if v}


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name("model.int8.onnx")
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(path)


def _graph_inputs(adapter, task: TaskSpec) -> tuple[nn.Module, tuple, list[str], tuple]:
    """What is exported: the module of the task's logits, sample inputs, their names, and their
    dynamic axes (batch and sequence)."""
    sample = adapter.encode(_sample_rows(task), task)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    wrapper = _TaskLogits(adapter, task, names).eval()
    args = tuple(sample[n] for n in names)
    longest = min(int(adapter.max_length), int(getattr(adapter.model.config, "max_position_embeddings", 0) or 10**6))
    batch_dim, seq_dim = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=1, max=longest)
    dynamic = (tuple({0: batch_dim, 1: seq_dim} for _ in names),)  # forward(*tensors): one varargs entry
    return wrapper, args, names, dynamic


def _torch_export(wrapper: nn.Module, args: tuple, names: list[str], dynamic: tuple, path: Path,
                  opset: int | None) -> None:
    """Write the graph to ``path``; an exporter failure is one line."""
    import logging
    import warnings

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notes on optional torchvision ops are not the user's business
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, args, str(path), dynamo=True, input_names=names,
                              output_names=["logits"], dynamic_shapes=dynamic, opset_version=opset,
                              external_data=False, verbose=False, report=False)
        except Exception as exc:
            raise MtpruneError(f"torch.onnx.export failed: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]}") from None
        finally:
            quiet.setLevel(level)


def _check_logits(adapter, task: TaskSpec, folder: Path, quantize: str | None) -> tuple[int, float]:
    """The exported graph's logits against PyTorch's on real rows: ``(rows, largest difference)``;
    over :data:`TOLERANCE` without quantisation is an error."""
    session = open_session(folder)
    rows = _check_rows(task)
    ref = _pytorch_logits(adapter, task, rows)
    got = _onnx_logits(session, adapter, task, rows)
    diff = float(np.abs(ref - got).max())
    if not quantize and diff > TOLERANCE:
        raise MtpruneError(f"the exported graph's logits differ from PyTorch's by {diff:.2e} (over "
                           f"{TOLERANCE:g}): not written")
    return len(rows), diff


def _description(adapter, task: TaskSpec, names: list[str], fused: dict | None, quantize: str | None,
                 checked: int, diff: float, seconds: float, ort) -> dict:
    """What ``mtprune_onnx.json`` says (``measured`` is filled in by :func:`_evaluate_export`)."""
    from mtprune.pruning import PRUNED_KEY

    cfg = adapter.model.config
    pruned = getattr(cfg, PRUNED_KEY, None) or {}
    mask = pruned.get("mask_meta") or {}
    return portable({  # names, never this machine's paths (the description leaves it)
        "format": META_FORMAT, "task": task.name, "head": adapter.head_for(task), "fields": list(task.fields),
        "labels": list(task.labels), "inputs": names, "output": "logits", "max_length": int(adapter.max_length),
        "layers": int(getattr(cfg, "num_hidden_layers", 0) or 0),
        "source": {"model": adapter.display_name, "format": adapter.format,
                   "fingerprint": adapter.fingerprint(), "parameters": int(adapter.num_parameters())},
        "pruned": ({"sizes": pruned.get("sizes"), "mask": {k: mask.get(k) for k in
                                                            ("sparsity", "scope", "kinds", "stack", "meta")},
                    "repair": pruned.get("repair"), "source": pruned.get("source")} if pruned else None),
        "optimized": fused, "quantized": quantize,
        "check": {"rows": checked, "max_logit_difference": diff},
        "export_seconds": round(seconds, 2), "torch": torch.__version__, "onnxruntime": ort.__version__,
        "measured": None,
    })


def _evaluate_export(folder: Path, out: Path, task: TaskSpec, meta: dict, split: str | None,
                     limit: int | None, log) -> None:
    """Evaluate the exported graph (onnxruntime) and record the result as ``meta["measured"]``."""
    from mtprune.evaluation import evaluate
    from mtprune.formats.onnxrt import OnnxAdapter

    exported = OnnxAdapter.load_directory(folder, str(out), "cpu")
    res = evaluate(exported, task, split, limit=limit, batch_size=32)
    meta["measured"] = {"split": res.split, "rows": res.n,
                        **{m: round(v, 6) for m, v in res.metrics.items()},
                        "intervals": {m: [round(x, 6) for x in iv] for m, iv in res.intervals.items()},
                        "seconds": round(res.seconds, 2)}
    log(f"measured on the exported graph: {task.name}/{res.split} accuracy {res.describe()}")


def export_onnx(adapter, task: TaskSpec | str, out, *, overwrite: bool = False, optimize: bool = False,
                quantize: str | None = None, evaluate_limit: int | None = None, evaluate_split: str | None = None,
                evaluate: bool = True, opset: int | None = None, log=None, mask=None, measured: dict | None = None,
                flops_kept: float | None = None) -> Path:
    """Write ``out`` (see the module's description); returns its path.

    ``evaluate`` evaluates the exported graph on the task's ``evaluate_split`` (default: its
    validation split; ``evaluate_limit`` rows, default all) and records the accuracy with its
    interval. The graph's logits are checked against PyTorch's on real rows first: a difference
    over 1e-3 (without quantisation) is an error and nothing is written. The model card
    (``README.md``) gives the graph's accuracy, else ``measured`` (``{task: EvalResult}`` of this
    pruned model in PyTorch) or what its config records; ``mask`` (default: its directory's
    ``mask.json``) and ``flops_kept`` fill in the units and FLOPs kept.
    """
    from mtprune.checkpoints import check_out_dir
    from mtprune.formats.onnxrt import onnxruntime

    ort = onnxruntime()
    log = log or (lambda msg: None)
    task = get_task(task) if isinstance(task, str) else task
    if quantize not in QUANTIZE:
        raise MtpruneError(f"--quantize takes int8, not {quantize!r}")
    check_exportable(adapter, task)
    out = check_out_dir(Path(out), overwrite)
    device = adapter.device
    adapter.to("cpu")
    try:
        wrapper, args, names, dynamic = _graph_inputs(adapter, task)
        with io.staging_dir(out) as tmp:
            t0 = time.perf_counter()
            _torch_export(wrapper, args, names, dynamic, tmp / MODEL_FILE, opset)
            seconds = time.perf_counter() - t0
            log(f"exported {MODEL_FILE} in {seconds:.1f} s")
            fused = _optimize(tmp / MODEL_FILE, adapter) if optimize else None
            if quantize:
                _quantize(tmp / MODEL_FILE)
            checked, diff = _check_logits(adapter, task, tmp, quantize)
            log(f"logits within {diff:.2e} of PyTorch on {checked} rows")
            if adapter.tokenizer is not None:
                adapter.tokenizer.save_pretrained(str(tmp))
            meta = _description(adapter, task, names, fused, quantize, checked, diff, seconds, ort)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
            if evaluate:
                _evaluate_export(tmp, out, task, meta, evaluate_split, evaluate_limit, log)
                (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
            (tmp / CARD_FILE).write_text(_onnx_card(adapter, task, out.name, meta, mask, measured, flops_kept))
            io.publish_dir(tmp, out)
    finally:
        adapter.to(device)
    return out


def zip_onnx(adapter, task, folder: str, **kw) -> bytes:
    """The bytes of a zip holding the export in ``folder/`` (the dashboard's download)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return io.zip_directory(export_onnx(adapter, task, Path(d) / folder, **kw), folder)


def _onnx_card(adapter, task: TaskSpec, name: str, meta: dict, mask=None, measured: dict | None = None,
               flops_kept: float | None = None) -> str:
    """The README.md of an ONNX export: the accuracy measured on the graph (else the one measured on
    the pruned model, else none), the rest as for a model directory."""
    from mtprune.card import model_card
    from mtprune.checkpoints import measured_entry

    mask = mask if mask is not None else _saved_mask(adapter)
    given = measured_entry(measured[task.name]) if measured and task.name in measured else None
    measured = meta.get("measured") or given or _recorded(adapter, task)
    notes = [f"model.onnx: token ids in ({', '.join(meta['inputs'])}), {task.name}'s logits out; its logits are "
             f"within {meta['check']['max_logit_difference']:.1e} of PyTorch's on {meta['check']['rows']} rows"]
    if meta.get("quantized") or meta.get("optimized"):
        notes.append(f"optimized: {bool(meta.get('optimized'))}, quantized: {meta.get('quantized') or 'no'} "
                     "(the accuracy above is the graph's own)")
    flops = flops_kept if flops_kept is not None else _flops_kept(adapter, task, mask)
    return model_card(card_facts(adapter, task, name=name, kind="onnx", mask=mask, measured=measured,
                                 flops_kept=flops, notes=notes)) + "\n"


# ----------------------------------------------------------------------------------------------
# names


def _slug(text) -> str:
    import re

    return re.sub(r"[^a-z0-9._]+", "-", str(text).lower()).strip("-.") or "model"


def _pruned_entry(adapter) -> dict:
    from mtprune.pruning import PRUNED_KEY

    model = getattr(adapter, "model", None)
    return dict(getattr(getattr(model, "config", None), PRUNED_KEY, None) or {})


def source_name(adapter) -> str:
    """The name of the model an export comes from: a pruned model's source (a directory's name, a
    hub id's last part), else the adapter's own name; never a path."""
    src = (_pruned_entry(adapter).get("source") or {}).get("model") or adapter.display_name
    return str(portable(str(src))).split("#")[0].rstrip("/").split("/")[-1] or "model"


def mask_slug(header: dict | None) -> str:
    """How a mask reads in a name (its header, :meth:`Mask.to_header`, or a pruned model's
    ``mask_meta``): ``flops50`` (a budget: its measure and the percent kept), ``ffn50`` or
    ``ffn50-heads25`` (percent pruned per kind), ``-global`` for one ranking over all layers."""
    from mtprune.costs import Budget

    if not header:
        return "dense"
    meta = header.get("meta") or {}
    if meta.get("budget"):
        b = Budget.parse(meta["budget"])
        return f"{b.measure}{b.percent}"
    per = meta.get("sparsity_per_kind") or {header.get("kinds", "ffn"): header.get("sparsity", 0)}
    slug = "-".join(f"{k}{round(100 * float(p))}" for k, p in per.items() if p or k == "ffn") or "dense"
    return slug + ("-global" if header.get("scope") == "global" else "")


def method_of(header: dict | None) -> str | None:
    """The attribution method a mask's units were ranked by, when its header says."""
    meta = (header or {}).get("meta") or {}
    return (meta.get("scores_spec") or {}).get("method") or meta.get("method")


def export_name(model: str, task: str, method: str | None, mask: str, repair: str | None = None) -> str:
    """``minilm-l6-mt6-sst2-ap-flops50-lsq``: model, task, method, mask and repair (when there is one);
    a dense model is ``minilm-l6-mt6-sst2-dense``."""
    if mask == "dense" and not method:
        return f"{_slug(model)}-{_slug(task)}-dense"
    name = f"{_slug(model)}-{_slug(task)}-{_slug(method or 'mask')}-{mask}"
    return name + (f"-{_slug(repair)}" if repair and repair != "none" else "")


def default_name(adapter, task: TaskSpec | str, mask=None, repair: str | None = None) -> str:
    """The name of an export of ``adapter`` for ``task``: of ``mask`` and ``repair`` when given (the
    dashboard names its downloads before it builds them), else what a pruned model's config records."""
    task = get_task(task) if isinstance(task, str) else task
    entry = _pruned_entry(adapter)
    header = mask.to_header() if mask is not None else entry.get("mask_meta")
    repair = repair if repair is not None else (entry.get("repair") or {}).get("method")
    if not header:
        return export_name(source_name(adapter), task.name, None, "dense")
    return export_name(source_name(adapter), task.name, method_of(header), mask_slug(header), repair)


# ----------------------------------------------------------------------------------------------
# one task's model


def _same_logits(a, b, task: TaskSpec, tol: float = 1e-4) -> bool:
    rows = _sample_rows(task)
    try:
        return float(np.abs(_pytorch_logits(a, task, rows) - _pytorch_logits(b, task, rows)).max()) <= tol
    except Exception:  # a model the copy cannot run is not the same model
        return False


def single_task(adapter, task: TaskSpec | str):
    """The adapter serving only ``task``: a multi-task model as a stock sequence classifier when that
    computes its logits (checked on two rows), else a copy with that task's head alone; other
    formats hold one task's head (or label words) already and come back as they are."""
    import copy

    from mtprune.formats import prunable
    from mtprune.formats.multitask import MultiTaskAdapter, single_task_classifier

    task = get_task(task) if isinstance(task, str) else task
    adapter = prunable(adapter)
    head = adapter.head_for(task)
    if not isinstance(adapter, MultiTaskAdapter):
        return adapter
    try:
        clf = single_task_classifier(adapter, task)
    except MtpruneError:
        clf = None
    if clf is not None and _same_logits(adapter, clf.to(adapter.device), task):
        clf.source = adapter.source
        return clf
    one = adapter.copy()
    one.task_heads = nn.ModuleDict({head: one.task_heads[head]})
    meta = copy.deepcopy(one.tasks_meta or {})
    if isinstance(meta.get("tasks"), dict):
        meta["tasks"] = {k: v for k, v in meta["tasks"].items() if k == head}
    one.tasks_meta, one._fingerprint = meta, None
    return one


def _plain_config(one) -> str | None:
    """Let plain transformers build ``one`` from its config where it can (every layer keeps the
    same number of FFN neurons and every head: ``intermediate_size`` set to it); None when it can,
    else why not (a sentence for the model card)."""
    from transformers import AutoModelForSequenceClassification

    if one.format == "multitask":
        return ("It is a multi-task directory (an encoder and heads.safetensors), which the stock transformers "
                "classes do not read whole.")
    if one.format != "seqcls":
        return (f"It is a {one.format} model that reads {one.model.config.model_type} label words: load it with "
                f"transformers' {one.auto_class} and compare the label words' log-probabilities, as mtprune does."
                + (" Its layers were pruned to sizes the stock classes cannot build." if _pruned_entry(one) else ""))
    if not _pruned_entry(one):
        return None
    cfg = one.model.config
    sites = one.unit_sites()
    ffn = sorted({s.n_units for s in sites if s.kind == "ffn"})
    n_heads = getattr(cfg, "num_attention_heads", None)
    if any(s.n_units != n_heads for s in sites if s.kind == "heads"):
        return ("Its attention heads were pruned, and the stock transformers classes give every layer the "
                "config's number of heads.")
    if len(ffn) > 1 or not hasattr(cfg, "intermediate_size"):
        return (f"Its layers keep different numbers of FFN neurons ({', '.join(map(str, ffn))}), and the stock "
                "transformers classes give every layer one intermediate_size.")
    old, cfg.intermediate_size = cfg.intermediate_size, ffn[0] if ffn else cfg.intermediate_size
    try:  # the stock class built from the config must hold exactly these weights
        stock = AutoModelForSequenceClassification.from_config(cfg).state_dict()
        ok = {k: tuple(v.shape) for k, v in stock.items()} == {k: tuple(v.shape)
                                                              for k, v in one.model.state_dict().items()}
    except Exception:
        ok = False
    if not ok:
        cfg.intermediate_size = old
        return "The stock transformers class built from its config does not match its weights."
    return None


def _saved_mask(adapter):
    """The mask a pruned model directory was saved with (``mask.json``), when it has one."""
    from pathlib import Path as _P

    from mtprune.checkpoints import MASK_FILE
    from mtprune.masks import load_mask

    f = _P(str(getattr(adapter, "source", "")).split("#")[0]) / MASK_FILE
    try:
        return load_mask(f) if _pruned_entry(adapter) and f.is_file() else None
    except MtpruneError:
        return None


def _recorded(adapter, task: TaskSpec) -> dict | None:
    """What a pruned model's config records as measured on it for ``task`` (or its head)."""
    measured = _pruned_entry(adapter).get("measured") or {}
    try:
        head = adapter.head_for(task)
    except MtpruneError:
        head = None
    return measured.get(task.name) or (measured.get(head) if head else None)


class _Recorded:
    """A recorded measurement (``checkpoints.measured_entry``'s dict) read as an evaluation result."""

    def __init__(self, d: dict):
        self.split, self.n = d.get("split"), int(d.get("rows", 0))
        self.intervals = {k: tuple(v) for k, v in (d.get("intervals") or {}).items()}
        self.metrics = {k: v for k, v in d.items() if k not in ("split", "rows", "intervals", "seconds")}


def _flops_kept(adapter, task: TaskSpec, mask) -> float | None:
    """The share of the prunable FLOPs ``mask`` keeps (per-unit FLOPs do not change with pruning, so
    the pruned model's own costs serve); None without a mask or the task's rows to measure length on."""
    from mtprune.costs import kept_share, prepare_costs

    if mask is None:
        return None if _pruned_entry(adapter) else 1.0
    try:
        return kept_share(mask, prepare_costs(adapter, task, "flops").costs, mask.n_units)
    except Exception:  # no local rows for the task's average length: not computed, not guessed
        return None


def _dense_parameters(adapter, task: TaskSpec, mask) -> int | None:
    """The parameters of the source model with this task's head alone: the pruned model's plus
    every unit the mask removed (:func:`mtprune.units.unit_cost`)."""
    from mtprune.units import unit_cost

    total = _task_parameters(adapter, task)
    if mask is None:
        return None if _pruned_entry(adapter) else total
    for s in adapter.unit_sites():
        if s.group in mask.n_units and not s.view_of:
            total += (int(mask.n_units[s.group][s.layer]) - s.n_units) * unit_cost(adapter.model, s)
    return total


def _task_parameters(adapter, task: TaskSpec) -> int:
    """Parameters of the encoder and the one head serving ``task`` (other task heads left out)."""
    heads = getattr(adapter, "task_heads", None)
    total = int(adapter.num_parameters())
    if heads is None:
        return total
    keep = adapter.head_for(task)
    return total - sum(p.numel() for name, h in heads.items() if name != keep for p in h.parameters())


# ----------------------------------------------------------------------------------------------
# the model card and the model directory


def card_facts(adapter, task: TaskSpec, *, name: str, kind: str = "model", mask=None, measured: dict | None = None,
               flops_kept: float | None = None, plain_reason: str | None = None, calibration: str | None = None,
               notes=()) -> dict:
    """What :func:`mtprune.card.model_card` writes of the export ``name`` of ``adapter`` (its config's
    ``mtprune_pruned`` entry: the source, the mask's header, the repair), all paths as names."""
    from mtprune import __version__
    from mtprune.card import units_line

    entry = portable(_pruned_entry(adapter))
    src = source_name(adapter)
    fp = (entry.get("source") or {}).get("fingerprint") or adapter.fingerprint()
    header = portable(mask.to_header()) if mask is not None else entry.get("mask_meta")
    units = units_line({g: mask.kept(g) for g in mask.groups}, {g: mask.total(g) for g in mask.groups}) \
        if mask is not None else (f"{header['kept']:,} of {header['total']:,} units" if header and "total" in header
                                  else None)
    model_class = "ONNX graph (model.onnx)" if kind == "onnx" else f"{adapter.format}: {type(adapter.model).__name__}"
    return {"name": name, "kind": kind, "task": task.name, "fields": list(task.fields), "labels": list(task.labels),
            "source_name": src, "source": f"{src} (weights fingerprint {str(fp)[:16]})",
            "task_line": f"{task.name} (head {adapter.head_for(task)}; labels {', '.join(task.labels)})",
            "format_line": model_class, "mask": header, "units_line": units, "repair": entry.get("repair"),
            "calibration": calibration, "measured": portable(measured) if measured else None,
            "params": _task_parameters(adapter, task), "params_dense": _dense_parameters(adapter, task, mask),
            "flops_kept": flops_kept, "plain": plain_reason is None, "plain_reason": plain_reason,
            "onnx_ok": _is_classifier(adapter),
            "version": __version__, "notes": list(notes)}


def _is_classifier(adapter) -> bool:
    from mtprune.formats import ClassifierAdapter

    return isinstance(adapter, ClassifierAdapter)


def _make_portable(one) -> None:
    """The copy's config names no path of this machine (its source, its mask's settings, its
    calibration files): each is cut to its last part."""
    from mtprune.pruning import PRUNED_KEY

    entry = _pruned_entry(one)
    if entry:
        setattr(one.model.config, PRUNED_KEY, portable(entry))


def export_model(adapter, task: TaskSpec | str, out, *, mask=None, measured: dict | None = None,
                 flops_kept: float | None = None, calibration: str | None = None, overwrite: bool = False,
                 dtype=None, log=None) -> Path:
    """Write ``out``: a model directory that serves ``task`` alone (:func:`single_task`; only its
    head), loads with :func:`mtprune.checkpoints.load_adapter` and, where the format allows, with
    plain transformers, and carries a model card (``README.md``).

    ``adapter`` is a dense, hard-pruned or repaired model; ``mask`` the mask it was pruned with
    (default: the ``mask.json`` of its directory); ``measured`` ``{task: EvalResult}`` measured on
    this very model (default: what its config records; never its source's); ``flops_kept`` the share
    of prunable FLOPs kept (default: computed from the mask at the task's average length);
    ``calibration`` where a repair's rows came from, when its config does not say. The directory
    appears whole or not at all."""
    from mtprune.checkpoints import as_dtype, check_out_dir, measured_entry, write_model
    from mtprune.card import model_card
    from mtprune.formats import prunable

    log = log or (lambda msg: None)
    task = get_task(task) if isinstance(task, str) else task
    adapter = prunable(adapter)
    adapter.head_for(task)
    out = check_out_dir(Path(out), overwrite)
    as_dtype(dtype)
    mask = mask if mask is not None else _saved_mask(adapter)
    recorded = measured_entry(measured[task.name]) if measured and task.name in measured else \
        (None if measured is not None else _recorded(adapter, task))
    one = single_task(adapter, task)
    _make_portable(one)
    reason = _plain_config(one)
    flops = flops_kept if flops_kept is not None else _flops_kept(one, task, mask)
    facts = card_facts(one, task, name=out.name, mask=mask, measured=recorded, flops_kept=flops,
                       plain_reason=reason, calibration=calibration)
    with io.staging_dir(out) as tmp:
        write_model(one, tmp, mask=None if mask is None else _portable_mask(mask), dtype=dtype,
                    measured={task.name: _Recorded(recorded)} if recorded else None)
        (tmp / CARD_FILE).write_text(model_card(facts) + "\n")
        io.publish_dir(tmp, out)
    log(f"wrote {out}: {task.name}'s head only ({one.format}), with {CARD_FILE}")
    return out


def _portable_mask(mask):
    from dataclasses import replace

    return replace(mask, meta=portable(mask.meta))


def zip_model(adapter, task: TaskSpec | str, folder: str, **kw) -> bytes:
    """The bytes of a zip holding :func:`export_model`'s directory in ``folder/`` (the dashboard's
    download)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return io.zip_directory(export_model(adapter, task, Path(d) / folder, **kw), folder)
