"""What every model format offers, and the registry of formats.

Two contracts, one the other's extension:

* :class:`EvalAdapter`: a model that **evaluates**: a task's rows in (:meth:`EvalAdapter.encode`),
  logits over its labels out (:meth:`EvalAdapter.logits`), its task heads, a fingerprint and its
  facts. An exported ONNX graph (:mod:`mtprune.formats.onnxrt`) is this and nothing more.
* :class:`ModelAdapter`: a **prunable** model: an :class:`EvalAdapter` over a torch module whose
  units can be scored, masked and sliced (:meth:`ModelAdapter.unit_sites`), copied, moved, saved,
  with the random-label control (:meth:`ModelAdapter.control_logprob`).

Code that needs the module asks the type (``isinstance(adapter, ModelAdapter)``, or
:func:`prunable` for one clear line), never for a missing attribute.

A *format* is such a class registered with :func:`register_format`. It says

* how it is **detected** (:meth:`EvalAdapter.detect`: from a directory's ``config.json`` and file
  names; :meth:`EvalAdapter.matches`: from a model object in memory; :meth:`EvalAdapter.owns_directory`:
  a directory it reads all by itself),
* how its model is **built** (:attr:`ModelAdapter.auto_class` with :meth:`ModelAdapter.model_kwargs`:
  ``from_pretrained`` for a dense directory, ``from_config`` for a pruned one),
* how it is **loaded** (:meth:`ModelAdapter.open`: the adapter over a loaded model, reading any
  files of its own, as the multi-task format's task heads; :meth:`EvalAdapter.load_directory`)
  and **saved** (:meth:`ModelAdapter.save_extra`),
* and, once loaded, how the rest of mtprune runs it: logits over a task's labels
  (:meth:`EvalAdapter.logits`) and the prunable units per layer (:meth:`ModelAdapter.model_sites`,
  from named layer specs: :func:`mtprune.units.build_sites`).

Nothing outside ``mtprune/formats`` knows an architecture's module names. Loading and saving
directories is :mod:`mtprune.checkpoints`'s; nothing here imports it.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.tasks import TASKS, TaskSpec, get_task
from mtprune.units import UnitSite, group_sites, ordered_groups

FORMATS: dict[str, type["EvalAdapter"]] = {}


def register_format(cls: type["EvalAdapter"]) -> type["EvalAdapter"]:
    """Register a format (a class decorator). Detection tries formats by their ``detect_order``,
    lowest first: give a more specific format a lower number than a more general one."""
    if not cls.format:
        raise ValueError(f"{cls.__name__} has no format name")
    FORMATS[cls.format] = cls
    return cls


def _in_detect_order() -> list[type["EvalAdapter"]]:
    return sorted(FORMATS.values(), key=lambda c: c.detect_order)


def get_format(name: str) -> type["EvalAdapter"]:
    try:
        return FORMATS[name]
    except KeyError:
        raise MtpruneError(f"unknown model format {name!r}; formats: {', '.join(FORMATS)}") from None


def detect_format(cfg: dict, files: set[str]) -> type["EvalAdapter"] | None:
    """The first registered format that recognises a directory (its config and file names)."""
    for cls in _in_detect_order():
        if cls.detect(cfg, files):
            return cls
    return None


def format_owning(path: Path) -> type["EvalAdapter"] | None:
    """The registered format that loads the directory ``path`` by itself, if any."""
    for cls in _in_detect_order():
        if cls.owns_directory(path):
            return cls
    return None


def format_for_module(model: nn.Module) -> type["ModelAdapter"] | None:
    """The first registered format that can wrap an in-memory model."""
    for cls in _in_detect_order():
        if cls.matches(model):
            return cls
    return None


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MtpruneError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MtpruneError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def fields_text(task: TaskSpec, row: dict) -> list[str]:
    try:
        return [str(row[f]) for f in task.fields]
    except KeyError as exc:
        raise MtpruneError(f"a row lacks the field {exc.args[0]!r} that task {task.name} needs") from None


def config_attr(cfg, *names, default=None):
    """The first of ``names`` the config has (configs spell sizes differently)."""
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def load_tokenizer(path: Path, trust_remote_code: bool = False):
    """The tokenizer saved in a model directory, or one line saying why it does not load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise MtpruneError(f"{path} has no usable tokenizer: {type(exc).__name__}: {exc}") from None


class EvalAdapter:
    """What every model offers: it evaluates. A task's rows in, logits over the task's labels out,
    the task heads that serve tasks, a fingerprint for cache keys and what the model is (``info``).
    A format that only evaluates (an ONNX export) subclasses this alone; prunable formats subclass
    :class:`ModelAdapter`."""

    format: str = ""
    description: str = ""
    detect_order: int = 100  # detection tries lower numbers first
    default_max_length: int = 256
    # True when ``logits`` are log-probabilities of label words (P(gold) = exp(logit)); False for
    # classifier heads (P(gold) = softmax over the labels).
    logits_are_logprobs: bool = False
    tokenizer: object  # the tokenizer :meth:`encode` uses
    source: str  # where the model came from (a directory, a hub id, ``<memory>``)
    max_length: int  # tokens per row at most

    # -- the format: detect, load -----------------------------------------------------------------
    @classmethod
    def detect(cls, cfg: dict, files: set[str]) -> bool:
        """Whether a directory with this ``config.json`` and these files holds this format."""
        raise NotImplementedError

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether an in-memory torch model is of this format (never, for a format without one)."""
        return False

    @classmethod
    def owns_directory(cls, path: Path) -> bool:
        """Whether this format loads a directory all by itself (:meth:`load_directory`), without
        a transformers ``config.json`` (an exported ONNX model)."""
        return False

    @classmethod
    def load_directory(cls, path: Path, source: str, device: str = "cpu", max_length: int | None = None):
        raise NotImplementedError

    # -- tasks ---------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """The tasks this model can serve directly (task heads, or any task for label-word models)."""
        raise NotImplementedError

    def head_for(self, task: TaskSpec | str) -> str:
        """The task head that serves ``task`` (``imdb`` is read through ``sst2``); an error if none."""
        task = get_task(task) if isinstance(task, str) else task
        names = self.task_names()
        for h in task.task_heads:
            if h in names:
                return h
        raise MtpruneError(
            f"model {self.display_name} has no head for task {task.name} "
            f"(its tasks: {', '.join(names) or 'none'})"
        )

    def supports(self, task: TaskSpec | str) -> bool:
        try:
            self.head_for(task)
            return True
        except MtpruneError:
            return False

    @property
    def display_name(self) -> str:
        return Path(self.source).name if Path(self.source).exists() else self.source

    # -- compute --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where :meth:`encode` puts a batch."""
        raise NotImplementedError

    def encode(self, rows: Sequence[dict], task: TaskSpec) -> dict:
        """Tokenise rows of ``task`` into a batch on the model's device (``labels`` when present)."""
        raise NotImplementedError

    def logits(self, batch: dict, task: TaskSpec) -> torch.Tensor:
        """[batch, n_labels] scores over the task's label ids."""
        raise NotImplementedError

    # -- facts ------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of what the model computes: the cache keys of its results depend on it."""
        raise NotImplementedError

    def info(self) -> dict:
        """What the model is: name, source, format, architecture, parameters, layers, tasks, and
        the units of every layer per group (``{"encoder.ffn": [1536, ...], ...}``; ``{}`` when it
        has none to prune)."""
        raise NotImplementedError


class ModelAdapter(EvalAdapter):
    """A prunable model: an :class:`EvalAdapter` over a torch module with unit sites. Subclasses
    fill in the architecture."""

    auto_class: str = "AutoModel"  # the transformers class that builds and loads the model

    def __init__(self, model: nn.Module, tokenizer, source: str, max_length: int = 256):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        # never longer than the model's position table (a small model cannot read 256 tokens)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = min(max_length, positions) if isinstance(positions, int) and positions > 0 else max_length
        self._fingerprint: str | None = None

    # -- the format: detect, build, load, save --------------------------------------------------
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        raise NotImplementedError

    @classmethod
    def model_kwargs(cls, config) -> dict:
        """Extra keyword arguments of ``from_pretrained`` / ``from_config``."""
        return {}

    @classmethod
    def _auto(cls):
        import transformers

        return getattr(transformers, cls.auto_class)

    @classmethod
    def from_pretrained(cls, path: Path, **kw) -> nn.Module:
        return cls._auto().from_pretrained(str(path), **cls.model_kwargs(None), **kw)

    @classmethod
    def build(cls, config, trust_remote_code: bool = False) -> nn.Module:
        """The model of ``config`` with fresh weights (a pruned directory's skeleton)."""
        return cls._auto().from_config(config, trust_remote_code=trust_remote_code, **cls.model_kwargs(config))

    @classmethod
    def prepare_tokenizer(cls, tokenizer) -> None:
        """Fix up a loaded tokenizer for this format (a pad token for causal LMs)."""

    @classmethod
    def open(cls, model: nn.Module, tokenizer, path: Path, source: str, max_length: int | None) -> "ModelAdapter":
        """The adapter over a model loaded from ``path`` (reads the format's own files)."""
        return cls(model, tokenizer, source, max_length or cls.default_max_length)

    def save_extra(self, out: Path, dtype: torch.dtype | None, pruned: dict | None = None) -> None:
        """Write the format's own files beside ``config.json`` and ``model.safetensors``
        (``pruned``: the ``mtprune_pruned`` record of a pruned model, None for a dense one)."""

    def copy(self) -> "ModelAdapter":
        """A new adapter over a deep copy of the model (and of the format's own state)."""
        import copy

        new = copy.copy(self)
        new.model = copy.deepcopy(self.model)
        new._fingerprint = None
        return new

    # -- compute --------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "ModelAdapter":
        self.model.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    def control_logprob(self, batch: dict, task: TaskSpec, seed: int) -> torch.Tensor:
        """[batch] log-probability of a control target that is not the task's (random-label)."""
        raise NotImplementedError

    @classmethod
    def model_sites(cls, model: nn.Module) -> list[UnitSite]:
        """The prunable units of a model of this format, one site per layer and kind."""
        raise NotImplementedError

    def unit_sites(self) -> list[UnitSite]:
        return self.model_sites(self.model)

    # -- facts ------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> str:
        """A hash of the architecture and every weight: the cache keys of scores depend on it."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(self.format.encode())
            h.update(json.dumps(_architecture(self.model.config), sort_keys=True, default=str).encode())
            for name, t in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._hash_extra(h)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def _hash_extra(self, h) -> None:
        pass

    def info(self) -> dict:
        groups = group_sites(self.unit_sites())
        units = {g: [s.n_units for s in groups[g]] for g in ordered_groups(groups)}
        return {
            "name": self.display_name,
            "source": self.source,
            "format": self.format,
            "architecture": type(self.model).__name__,
            "parameters": self.num_parameters(),
            "layers": max((len(v) for v in units.values()), default=0),
            "tasks": self.task_names(),
            "units": units,
        }


def prunable(adapter: EvalAdapter) -> ModelAdapter:
    """``adapter`` when it is a prunable model (a :class:`ModelAdapter`), else one line saying
    that it only evaluates."""
    if isinstance(adapter, ModelAdapter):
        return adapter
    what = adapter.description or f"a {adapter.format} model"
    raise MtpruneError(f"{adapter.display_name} is {what}: it evaluates only, with no units to score or prune "
                       "(use the PyTorch model it came from)")


# Config entries that say where and with what a model was loaded, not what it is: a model copied
# to another folder or read by another transformers release keeps its fingerprint (and its cache).
_PROVENANCE_KEYS = ("_name_or_path", "transformers_version", "_commit_hash")


def _architecture(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in _PROVENANCE_KEYS}


class ClassifierInputs:
    """How encoder classifiers read rows (a mixin of adapters with ``tokenizer``, ``max_length``
    and ``device``): the task's fields in order, as a sentence pair when two or more."""

    def encode(self, rows, task):
        texts = [fields_text(task, r) for r in rows]
        if len(task.fields) == 1:
            enc = self.tokenizer([t[0] for t in texts], truncation=True, max_length=self.max_length,
                                 padding=True, return_tensors="pt")
        else:
            enc = self.tokenizer([t[0] for t in texts], [" ".join(t[1:]) for t in texts],
                                 truncation=True, max_length=self.max_length, padding=True,
                                 return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in enc.items()}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], device=self.device)
        return batch

    @staticmethod
    def inputs(batch):
        return {k: v for k, v in batch.items() if k != "labels"}


class ClassifierAdapter(ClassifierInputs, ModelAdapter):
    """Encoder classifiers over a torch module: classifier logits, and the random-label control
    through a seeded random head over the pooled output."""

    @staticmethod
    def random_head(hidden: int, n_out: int, seed: int, like: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        w = torch.randn(n_out, hidden, generator=g) / hidden**0.5
        return w.to(device=like.device, dtype=like.dtype)

    def control_from_pooled(self, pooled: torch.Tensor, batch: dict, task: TaskSpec, seed: int) -> torch.Tensor:
        """log P(gold) of a seeded random linear head over the pooled output (random-label)."""
        w = self.random_head(pooled.shape[-1], task.num_labels, seed, pooled)
        logp = torch.log_softmax(pooled @ w.T, dim=-1)
        target = batch["labels"] if "labels" in batch else torch.zeros(len(pooled), dtype=torch.long, device=pooled.device)
        return logp.gather(1, target.view(-1, 1)).squeeze(1)


class LabelWordAdapter(ModelAdapter):
    """Label-word scoring, shared by T5 and causal LMs: every task is a prompt and its labels' words."""

    logits_are_logprobs = True
    default_max_length = 512

    def task_names(self):
        return list(TASKS)

    def label_word_ids(self, task: TaskSpec) -> list[list[int]]:
        out = []
        for word in task.labels:
            ids = self.tokenizer(self.label_text(word), add_special_tokens=False)["input_ids"]
            if not ids:
                raise MtpruneError(f"the tokenizer turns label {word!r} into no tokens")
            out.append(list(ids))
        return out

    def label_text(self, word: str) -> str:
        return word

    def control_ids(self, task: TaskSpec, n: int, seed: int) -> list[int]:
        """One random vocabulary word per example, never a token of the task's label words."""
        forbidden = {i for ids in self.label_word_ids(task) for i in ids}
        forbidden |= set(self.tokenizer.all_special_ids)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        rng = random.Random(seed)
        out = []
        while len(out) < n:
            i = rng.randrange(vocab)
            if i not in forbidden:
                out.append(i)
        return out
