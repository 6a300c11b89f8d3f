"""``multitask``: the shared-encoder format of ``models/minilm-l6-mt6``: a Hugging Face encoder
directory plus ``heads.safetensors`` (one linear task head per task over the pooled output,
``T.weight`` ``[n_labels, hidden]`` and ``T.bias``) and ``tasks.json`` (fields, labels, settings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.formats.base import ClassifierAdapter, register_format
from mtprune.formats.seqcls import SeqClsAdapter, encoder_sites
from mtprune.tasks import TaskSpec, get_task

MULTITASK_FORMAT = "shared-encoder multi-task classifier, v1"  # tasks.json's "format"
HEADS_FILE = "heads.safetensors"
TASKS_FILE = "tasks.json"


def load_task_heads(path: Path) -> dict[str, nn.Linear]:
    """The task heads of a multi-task directory, as float32 Linear layers."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / HEADS_FILE))
    except Exception as exc:
        raise MtpruneError(f"{path / HEADS_FILE} does not load: {exc}") from None
    heads = {}
    for key in sorted(tensors):
        if key.endswith(".weight"):
            name = key[: -len(".weight")]
            w = tensors[key].float()
            lin = nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                b = tensors.get(f"{name}.bias")
                lin.bias.copy_(b.float() if b is not None else torch.zeros(w.shape[0]))
            heads[name] = lin
    if not heads:
        raise MtpruneError(f"{path / HEADS_FILE} holds no task heads")
    return heads


def _pooler_kwargs(model_type: str | None) -> dict:
    return {"add_pooling_layer": True} if model_type == "bert" else {}


@register_format
class MultiTaskAdapter(ClassifierAdapter):
    """One shared encoder, one linear task head per task over the pooled output."""

    format = "multitask"
    detect_order = 10
    description = "a shared encoder with one linear task head per task (heads.safetensors, tasks.json)"
    auto_class = "AutoModel"

    def __init__(self, model, tokenizer, source, task_heads: dict[str, nn.Linear], tasks_meta: dict,
                 max_length: int = 256):
        super().__init__(model, tokenizer, source, max_length)
        self.task_heads = nn.ModuleDict(task_heads).to(self.device).eval()
        for p in self.task_heads.parameters():
            p.requires_grad_(False)
        self.tasks_meta = tasks_meta

    # -- the format -------------------------------------------------------------------------------
    @classmethod
    def detect(cls, cfg, files):
        return HEADS_FILE in files and TASKS_FILE in files

    @classmethod
    def matches(cls, model):
        return False  # an encoder in memory needs its task heads: adapter_for(model, tok, heads=...)

    @classmethod
    def model_kwargs(cls, config):
        return _pooler_kwargs(getattr(config, "model_type", None))

    @classmethod
    def from_pretrained(cls, path, **kw):
        cfg = json.loads((Path(path) / "config.json").read_text())
        return cls._auto().from_pretrained(str(path), **_pooler_kwargs(cfg.get("model_type")), **kw)

    @classmethod
    def open(cls, model, tokenizer, path, source, max_length):
        try:
            meta = json.loads((Path(path) / TASKS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise MtpruneError(f"{Path(path) / TASKS_FILE} does not read as JSON: {exc}") from None
        heads = load_task_heads(Path(path))
        return cls(model, tokenizer, source, heads, meta, max_length or int(meta.get("max_length", 256)))

    def save_extra(self, out, dtype, pruned=None):
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu", dtype or v.dtype).contiguous().clone()
                   for k, v in self.task_heads.state_dict().items()}
        save_file(tensors, str(out / HEADS_FILE), metadata={"format": "pt"})
        meta = copy.deepcopy(self.tasks_meta or {})
        if pruned is not None:
            # a pruned model records what was measured on it, and nothing measured on its source
            measured = pruned.get("measured") or {}
            for name, t in (meta.get("tasks") or {}).items():
                t["validation_accuracy"] = None  # the source's figure, not this model's
                t["measured"] = measured.get(name)  # {split, rows, accuracy..., intervals} or None
            mask = pruned.get("mask_meta") or {}
            meta["pruned"] = {"source": pruned.get("source"), "mask": {k: mask.get(k) for k in
                                                                         ("sparsity", "scope", "kinds", "stack", "meta")},
                              "repair": pruned.get("repair"), "measured": measured}
        (out / TASKS_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    def copy(self):
        new = super().copy()
        new.task_heads = copy.deepcopy(self.task_heads)
        new.tasks_meta = copy.deepcopy(self.tasks_meta)
        return new

    def to(self, device):
        super().to(device)
        self.task_heads.to(self.device)
        return self

    # -- running it -------------------------------------------------------------------------------
    def task_names(self):
        return list(self.task_heads.keys())

    def head_for(self, task):
        task = get_task(task) if isinstance(task, str) else task
        head = super().head_for(task)
        n = self.task_heads[head].out_features
        if n != task.num_labels:
            raise MtpruneError(f"head {head} has {n} labels but task {task.name} has {task.num_labels}")
        return head

    def pooled(self, batch):
        return self.model(**self.inputs(batch)).pooler_output

    def logits(self, batch, task):
        return self.task_heads[self.head_for(task)](self.pooled(batch))

    def control_logprob(self, batch, task, seed):
        return self.control_from_pooled(self.pooled(batch), batch, task, seed)

    @classmethod
    def model_sites(cls, model):
        return encoder_sites(model)

    def num_parameters(self):
        return super().num_parameters() + sum(p.numel() for p in self.task_heads.parameters())

    def _hash_extra(self, h):
        for name, t in sorted(self.task_heads.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().float().contiguous().numpy().tobytes())


def single_task_classifier(adapter: MultiTaskAdapter, task: TaskSpec | str) -> SeqClsAdapter:
    """Materialise one task of a multi-task model as a stock ``*ForSequenceClassification``.

    The encoder and the task's head are copied (the input adapter is left as it is); the result
    computes exactly the multi-task model's logits for that task and saves with
    ``adapter.model.save_pretrained`` like any Hugging Face classifier.
    """
    from transformers import AutoModelForSequenceClassification

    if not isinstance(adapter, MultiTaskAdapter):
        raise MtpruneError(f"{adapter.display_name} is a {adapter.format} model, not a multi-task one")
    task = get_task(task) if isinstance(task, str) else task
    head = adapter.head_for(task)
    cfg = copy.deepcopy(adapter.model.config)
    cfg.num_labels = task.num_labels
    cfg.id2label = dict(enumerate(task.labels))
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    cfg.finetuning_task = head
    cfg.architectures = None
    try:
        model = AutoModelForSequenceClassification.from_config(cfg)
    except ValueError as exc:
        raise MtpruneError(f"no sequence-classification class for {cfg.model_type}: {exc}") from None
    if getattr(cfg, "mtprune_pruned", None) is not None:
        # per-layer sizes differ from the config's: take the pruned encoder module as it is
        setattr(model, model.base_model_prefix, copy.deepcopy(adapter.model))
    else:
        getattr(model, model.base_model_prefix).load_state_dict(adapter.model.state_dict())
    clf = model.classifier
    if not isinstance(clf, nn.Linear):
        raise MtpruneError(f"{type(model).__name__} has a non-linear classifier; cannot copy the head")
    with torch.no_grad():
        clf.weight.copy_(adapter.task_heads[head].weight)
        clf.bias.copy_(adapter.task_heads[head].bias)
    model.to(adapter.device)
    return SeqClsAdapter(model, adapter.tokenizer, f"{adapter.source}#{head}", adapter.max_length)
