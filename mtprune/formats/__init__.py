"""Model formats: one module each, registered in detection order (the most specific first).

    multitask  a shared encoder + heads.safetensors + tasks.json (the default model)
    t5         T5 text-to-text, label words scored
    seqcls     any AutoModelForSequenceClassification
    causal     decoder-only LMs, label words scored
    onnx       an exported ONNX graph of one task (mtprune export), run by onnxruntime; evaluation only

A new format is one module here with a :class:`ModelAdapter` subclass (a prunable model; an
evaluate-only one, as ``onnx``, subclasses :class:`EvalAdapter`) decorated with
:func:`register_format` (every module of this package is imported; ``detect_order`` decides which
format detection tries first), or a plugin module (see docs/ARCHITECTURE.md).
"""

import importlib
import pkgutil

from mtprune.formats.base import (FORMATS, ClassifierAdapter, ClassifierInputs, EvalAdapter, LabelWordAdapter,
                                  ModelAdapter, detect_format, format_for_module, get_format, prunable,
                                  register_format, resolve_device)
from mtprune.formats.multitask import MULTITASK_FORMAT, MultiTaskAdapter, single_task_classifier
from mtprune.formats.t5 import T5Adapter
from mtprune.formats.seqcls import SeqClsAdapter, encoder_sites
from mtprune.formats.causal import CausalLMAdapter

for _m in pkgutil.iter_modules(__path__):  # formats added as modules of their own
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "FORMATS", "MULTITASK_FORMAT", "CausalLMAdapter", "ClassifierAdapter", "ClassifierInputs", "EvalAdapter",
    "LabelWordAdapter", "ModelAdapter", "MultiTaskAdapter", "SeqClsAdapter", "T5Adapter", "detect_format",
    "encoder_sites", "format_for_module", "get_format", "prunable", "register_format", "resolve_device",
    "single_task_classifier",
]
