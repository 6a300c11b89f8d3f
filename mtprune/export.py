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
from mtprune.tasks import TaskSpec, get_task

FORMATS = ("onnx",)
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
    return {
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
    }


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
                evaluate: bool = True, opset: int | None = None, log=None) -> Path:
    """Write ``out`` (see the module's description); returns its path.

    ``evaluate`` evaluates the exported graph on the task's ``evaluate_split`` (default: its
    validation split; ``evaluate_limit`` rows, default all) and records the accuracy with its
    interval. The graph's logits are checked against PyTorch's on real rows first: a difference
    over 1e-3 (without quantisation) is an error and nothing is written.
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
            io.publish_dir(tmp, out)
    finally:
        adapter.to(device)
    return out


def zip_onnx(adapter, task, folder: str, **kw) -> bytes:
    """The bytes of a zip holding the export in ``folder/`` (the dashboard's download)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return io.zip_directory(export_onnx(adapter, task, Path(d) / folder, **kw), folder)
