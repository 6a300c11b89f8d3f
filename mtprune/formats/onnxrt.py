"""An exported ONNX model (``mtprune export``), run by onnxruntime.

A directory with ``model.onnx`` (the encoder and one task's head: token ids in, that task's logits
out), the tokenizer files and ``mtprune_onnx.json`` (the task, its fields and labels, the graph's
inputs, the mask and what was measured). It evaluates like any model (``mtprune eval --model DIR``,
the dashboard), through the CPU provider or CUDA when onnxruntime has it. It is an :class:`~mtprune.formats.base.EvalAdapter` and no
more: it has no units to score or prune, no control target, nothing to copy or move; those need the
PyTorch model it came from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from mtprune.errors import MtpruneError
from mtprune.formats.base import ClassifierInputs, EvalAdapter, load_tokenizer, register_format

MODEL_FILE = "model.onnx"
META_FILE = "mtprune_onnx.json"
META_FORMAT = "mtprune onnx v1"


def onnxruntime():
    """The onnxruntime module, or one line saying how to install it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MtpruneError("ONNX needs onnxruntime, onnx and onnxscript: pip install 'mtprune[deploy]'") from None
    return ort


def providers_for(device: str = "auto") -> list[str]:
    """onnxruntime's execution providers for a device (``auto``: CUDA when onnxruntime has it)."""
    ort = onnxruntime()

    have = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise MtpruneError("--device cuda was asked for but this onnxruntime has no CUDA provider "
                               "(pip install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise MtpruneError(f"unknown device {device!r}: use auto, cpu or cuda")
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]


def open_session(path: Path, providers=("CPUExecutionProvider",), threads: int | None = None):
    """An onnxruntime session of ``path/model.onnx``, its log quiet (``threads``: intra-op threads,
    one inter-op); a graph that does not load is one line."""
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    f = Path(path) / MODEL_FILE
    try:
        return ort.InferenceSession(str(f), sess_options=opts, providers=list(providers))
    except Exception as exc:  # a corrupt or truncated graph
        raise MtpruneError(f"{f} does not load in onnxruntime: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}") from None


def read_meta(path: Path) -> dict:
    f = Path(path) / META_FILE
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise MtpruneError(f"{f} does not read as JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or not meta.get("head"):
        raise MtpruneError(f"{f} is not an mtprune ONNX description (format {META_FORMAT!r} with a head)")
    return meta


@register_format
class OnnxAdapter(ClassifierInputs, EvalAdapter):
    """One task's classifier as an onnxruntime session (evaluation only)."""

    format = "onnx"
    description = "an exported ONNX model (one task's head), run by onnxruntime"
    detect_order = 0

    def __init__(self, session, meta: dict, tokenizer, source: str, path: Path, providers: list[str]):
        self.session = session
        self.meta = meta
        self.tokenizer = tokenizer
        self.source = source
        self.path = Path(path)
        self.providers = providers
        self.max_length = int(meta.get("max_length", 256))
        self.input_names = [i.name for i in session.get_inputs()]
        self._fingerprint = None

    # -- the format ------------------------------------------------------------------------------
    @classmethod
    def detect(cls, cfg, files):
        return MODEL_FILE in files and META_FILE in files

    @classmethod
    def owns_directory(cls, path: Path) -> bool:
        return (Path(path) / MODEL_FILE).is_file() and (Path(path) / META_FILE).is_file()

    @classmethod
    def load_directory(cls, path: Path, source: str, device: str = "cpu", max_length: int | None = None):
        meta = read_meta(path)
        providers = providers_for(device)
        session = open_session(path, providers)
        names = {i.name for i in session.get_inputs()}
        if "input_ids" not in names or len(session.get_outputs()) != 1:
            raise MtpruneError(f"{Path(path) / MODEL_FILE} is not an mtprune export (inputs {sorted(names)})")
        adapter = cls(session, meta, load_tokenizer(path), source, path, providers)
        if max_length:
            adapter.max_length = int(max_length)
        return adapter

    # -- tasks -----------------------------------------------------------------------------------
    def task_names(self):
        return [self.meta["head"]]

    # -- compute ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # batches stay on the CPU; the session moves them

    def logits(self, batch, task):
        self.head_for(task)  # an error for a task this graph has no head for
        feed = {}
        for name in self.input_names:
            if name not in batch:
                raise MtpruneError(f"the ONNX model wants input {name!r}, which the tokenizer did not give")
            feed[name] = batch[name].detach().cpu().numpy().astype(np.int64)
        out = self.session.run(None, feed)[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    # -- facts -----------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """The graph's initializer elements (weights and constants)."""
        import onnx

        graph = onnx.load(str(self.path / MODEL_FILE), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims)) for t in graph.initializer))

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(self.format.encode())
            with open(self.path / MODEL_FILE, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def info(self) -> dict:
        return {"name": self.display_name, "source": self.source, "format": self.format,
                "architecture": f"ONNX graph ({', '.join(p.replace('ExecutionProvider', '') for p in self.providers)})",
                "parameters": self.num_parameters(), "layers": int(self.meta.get("layers", 0)),
                "tasks": self.task_names(), "units": {}}
