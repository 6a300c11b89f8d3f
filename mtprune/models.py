"""Model adapters: one interface over four model formats.

The rest of mtprune asks an adapter two things: "logits over this task's labels for these rows"
(:meth:`ModelAdapter.logits`) and "the prunable units per layer" (:meth:`ModelAdapter.unit_sites`).
It never touches ``model.bert.encoder.layer``.

Formats:

* ``multitask`` - the shared-encoder format of ``models/minilm-l6-mt6``: a Hugging Face encoder
  directory plus ``heads.safetensors`` (one linear head per task over the pooled output) and
  ``tasks.json``;
* ``seqcls`` - any ``AutoModelForSequenceClassification`` checkpoint, as a one-task model;
* ``t5`` - T5 text-to-text, scoring each label's words after T5's task prefix;
* ``causal`` - decoder-only LMs (Llama, Qwen, GPT-2 style) with a prompt and label words.

Weights load with safetensors only, and ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from mtprune import assets
from mtprune.errors import MtpruneError
from mtprune.tasks import TaskSpec, get_task
from mtprune.units import InProj, UnitSite

FORMATS = ("multitask", "seqcls", "t5", "causal")
MULTITASK_FORMAT = "shared-encoder multi-task classifier, v1"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MtpruneError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MtpruneError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


# ----------------------------------------------------------------------------------------------
# unit discovery per architecture family


def _attr(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return v
    return default


def _linear_out(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    return module.weight.shape[1]  # transformers' Conv1D stores [in, out]


def _linear_in(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.weight.shape[0]


def _sites_for_layers(model, stack, layer_paths, ffn, heads, head_dim, hard_heads=True):
    """Build sites from per-layer relative module names.

    ``ffn = (in_names, out_name)``; ``heads = (in_names, out_name, attn_module)``; names relative
    to each layer path. An in name ending in ``*3`` is a fused q|k|v projection.
    """
    sites = []
    for i, lp in enumerate(layer_paths):
        if ffn is not None:
            ins, out = ffn
            out_mod = model.get_submodule(f"{lp}.{out}")
            sites.append(
                UnitSite(stack, i, "ffn", _linear_in(out_mod), 1, f"{lp}.{out}",
                         tuple(InProj(f"{lp}.{n}") for n in ins))
            )
        if heads is not None:
            ins, out, attn = heads
            out_mod = model.get_submodule(f"{lp}.{out}")
            n_in = _linear_in(out_mod)
            in_proj = tuple(
                InProj(f"{lp}.{n[:-2]}", 3) if n.endswith("*3") else InProj(f"{lp}.{n}") for n in ins
            )
            sites.append(
                UnitSite(stack, i, "heads", n_in // head_dim, head_dim, f"{lp}.{out}", in_proj,
                         attn_module=f"{lp}.{attn}", hard_prunable=hard_heads)
            )
    return sites


def encoder_sites(model: nn.Module, prefix: str = "") -> list[UnitSite]:
    """Sites of a BERT-family encoder (BERT, RoBERTa, ELECTRA, MiniLM...) or DistilBERT."""
    cfg = model.config
    p = f"{prefix}." if prefix else ""
    n_heads = cfg.num_attention_heads if hasattr(cfg, "num_attention_heads") else cfg.n_heads
    hidden = _attr(cfg, "hidden_size", "dim")
    head_dim = hidden // n_heads
    try:
        n_layers = len(model.get_submodule(f"{p}encoder.layer"))
        layers = [f"{p}encoder.layer.{i}" for i in range(n_layers)]
        return _sites_for_layers(
            model, "encoder", layers,
            (("intermediate.dense",), "output.dense"),
            (("attention.self.query", "attention.self.key", "attention.self.value"),
             "attention.output.dense", "attention.self"),
            head_dim,
        )
    except AttributeError:
        pass
    try:
        n_layers = len(model.get_submodule(f"{p}transformer.layer"))
    except AttributeError:
        raise MtpruneError(
            f"{type(model).__name__} is not an encoder mtprune knows (BERT family or DistilBERT)"
        ) from None
    layers = [f"{p}transformer.layer.{i}" for i in range(n_layers)]
    return _sites_for_layers(
        model, "encoder", layers, (("ffn.lin1",), "ffn.lin2"),
        (("attention.q_lin", "attention.k_lin", "attention.v_lin"), "attention.out_lin", "attention"),
        head_dim,
    )


def t5_sites(model: nn.Module) -> list[UnitSite]:
    cfg = model.config
    gated = bool(getattr(cfg, "is_gated_act", False))
    ffn_in = ("wi_0", "wi_1") if gated else ("wi",)
    sites = []
    for stack, ffn_layer in (("encoder", 1), ("decoder", 2)):
        blocks = model.get_submodule(f"{stack}.block")
        layers = [f"{stack}.block.{i}" for i in range(len(blocks))]
        sites += _sites_for_layers(
            model, stack, layers,
            (tuple(f"layer.{ffn_layer}.DenseReluDense.{n}" for n in ffn_in), f"layer.{ffn_layer}.DenseReluDense.wo"),
            (tuple(f"layer.0.SelfAttention.{n}" for n in "qkv"), "layer.0.SelfAttention.o", "layer.0.SelfAttention"),
            cfg.d_kv,
            # T5 shares one relative position bias across layers: whole heads can be masked and
            # attributed, but not physically removed per layer.
            hard_heads=False,
        )
    return sites


def causal_sites(model: nn.Module) -> list[UnitSite]:
    cfg = model.config
    base = getattr(model, "model", None)
    if base is not None and hasattr(base, "layers"):  # Llama, Qwen, Mistral, Gemma...
        n_layers = len(base.layers)
        n_heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        kv = getattr(cfg, "num_key_value_heads", None) or n_heads
        layers = [f"model.layers.{i}" for i in range(n_layers)]
        mlp = model.get_submodule("model.layers.0.mlp")
        ffn_in = tuple(n for n in ("gate_proj", "up_proj") if hasattr(mlp, n))
        # with grouped key/value heads, query heads share k/v: they can be masked, not removed
        return _sites_for_layers(
            model, "decoder", layers,
            (tuple(f"mlp.{n}" for n in ffn_in), "mlp.down_proj"),
            (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn.o_proj", "self_attn"),
            head_dim, hard_heads=(kv == n_heads),
        )
    tr = getattr(model, "transformer", None)
    if tr is not None and hasattr(tr, "h"):  # GPT-2
        layers = [f"transformer.h.{i}" for i in range(len(tr.h))]
        head_dim = cfg.n_embd // cfg.n_head
        return _sites_for_layers(
            model, "decoder", layers, (("mlp.c_fc",), "mlp.c_proj"),
            (("attn.c_attn*3",), "attn.c_proj", "attn"), head_dim,
        )
    raise MtpruneError(f"{type(model).__name__} is not a decoder-only LM mtprune knows (Llama/Qwen/GPT-2 style)")


# ----------------------------------------------------------------------------------------------
# adapters


def _fields_text(task: TaskSpec, row: dict) -> list[str]:
    try:
        return [str(row[f]) for f in task.fields]
    except KeyError as exc:
        raise MtpruneError(f"a row lacks the field {exc.args[0]!r} that task {task.name} needs") from None


class ModelAdapter:
    """The interface every model format offers. Subclasses fill in the architecture."""

    format: str = ""
    # True when ``logits`` are log-probabilities of label words (P(gold) = exp(logit)); False for
    # classifier heads (P(gold) = softmax over the labels).
    logits_are_logprobs: bool = False

    def __init__(self, model: nn.Module, tokenizer, source: str, max_length: int = 256):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.source = source
        self.max_length = max_length
        self._fingerprint: str | None = None

    # -- tasks ---------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        """The tasks this model can serve directly (heads, or any task for label-word models)."""
        raise NotImplementedError

    def head_for(self, task: TaskSpec | str) -> str:
        """The head that serves ``task`` (``imdb`` is read through ``sst2``); an error if none."""
        task = get_task(task) if isinstance(task, str) else task
        names = self.task_names()
        for h in task.heads:
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
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> "ModelAdapter":
        self.model.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    def encode(self, rows: Sequence[dict], task: TaskSpec) -> dict:
        """Tokenise rows of ``task`` into a batch on the model's device (``labels`` when present)."""
        raise NotImplementedError

    def logits(self, batch: dict, task: TaskSpec) -> torch.Tensor:
        """[batch, n_labels] scores over the task's label ids."""
        raise NotImplementedError

    def control_logprob(self, batch: dict, task: TaskSpec, seed: int) -> torch.Tensor:
        """[batch] log-probability of a control target that is not the task's (random-label)."""
        raise NotImplementedError

    def unit_sites(self) -> list[UnitSite]:
        raise NotImplementedError

    # -- facts ------------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def fingerprint(self) -> str:
        """A hash of the architecture and every weight: the cache keys of scores depend on it."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(self.format.encode())
            h.update(json.dumps(self.model.config.to_dict(), sort_keys=True, default=str).encode())
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
        sites = self.unit_sites()
        units: dict[str, list[int]] = {}
        for s in sites:
            units.setdefault(s.group, []).append(s.n_units)
        return {
            "source": self.source,
            "format": self.format,
            "architecture": type(self.model).__name__,
            "parameters": self.num_parameters(),
            "tasks": self.task_names(),
            "units": units,
        }


class _ClassifierMixin:
    """Tokenisation for encoder classifiers: the task's fields in order, as a pair when two."""

    def encode(self, rows, task):
        texts = [_fields_text(task, r) for r in rows]
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
    def _inputs(batch):
        return {k: v for k, v in batch.items() if k != "labels"}

    def _random_head(self, hidden: int, n_out: int, seed: int, like: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        w = torch.randn(n_out, hidden, generator=g) / hidden**0.5
        return w.to(device=like.device, dtype=like.dtype)


class MultiTaskAdapter(_ClassifierMixin, ModelAdapter):
    """One shared encoder, one linear head per task over the pooled output."""

    format = "multitask"

    def __init__(self, model, tokenizer, source, heads: dict[str, nn.Linear], tasks_meta: dict,
                 max_length: int = 256):
        super().__init__(model, tokenizer, source, max_length)
        self.heads = nn.ModuleDict(heads).to(self.device).eval()
        for p in self.heads.parameters():
            p.requires_grad_(False)
        self.tasks_meta = tasks_meta

    def to(self, device):
        super().to(device)
        self.heads.to(self.device)
        return self

    def task_names(self):
        return list(self.heads.keys())

    def head_for(self, task):
        task = get_task(task) if isinstance(task, str) else task
        head = super().head_for(task)
        n = self.heads[head].out_features
        if n != task.num_labels:
            raise MtpruneError(f"head {head} has {n} labels but task {task.name} has {task.num_labels}")
        return head

    def pooled(self, batch):
        return self.model(**self._inputs(batch)).pooler_output

    def logits(self, batch, task):
        return self.heads[self.head_for(task)](self.pooled(batch))

    def control_logprob(self, batch, task, seed):
        pooled = self.pooled(batch)
        w = self._random_head(pooled.shape[-1], task.num_labels, seed, pooled)
        logp = torch.log_softmax(pooled @ w.T, dim=-1)
        target = batch["labels"] if "labels" in batch else torch.zeros(len(pooled), dtype=torch.long, device=pooled.device)
        return logp.gather(1, target.view(-1, 1)).squeeze(1)

    def unit_sites(self):
        return encoder_sites(self.model)

    def num_parameters(self):
        return super().num_parameters() + sum(p.numel() for p in self.heads.parameters())

    def _hash_extra(self, h):
        for name, t in sorted(self.heads.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().float().contiguous().numpy().tobytes())


class SeqClsAdapter(_ClassifierMixin, ModelAdapter):
    """Any ``AutoModelForSequenceClassification``: one task, the one it was fine-tuned for.

    The task is taken from ``config.finetuning_task`` (or ``mtprune_task``) when the config names
    one; otherwise any task with the same number of labels is accepted.
    """

    format = "seqcls"

    def task_names(self):
        cfg = self.model.config
        named = getattr(cfg, "mtprune_task", None) or getattr(cfg, "finetuning_task", None)
        from mtprune.tasks import TASKS

        if named:
            return [named] if named in TASKS else []
        return [t.name for t in TASKS.values() if not t.label_source and t.num_labels == cfg.num_labels]

    def head_for(self, task):
        task = get_task(task) if isinstance(task, str) else task
        if task.num_labels != self.model.config.num_labels:
            raise MtpruneError(
                f"model {self.display_name} has {self.model.config.num_labels} labels but task "
                f"{task.name} has {task.num_labels}"
            )
        return super().head_for(task)

    def logits(self, batch, task):
        self.head_for(task)
        return self.model(**self._inputs(batch)).logits

    def _base(self):
        return getattr(self.model, self.model.base_model_prefix)

    def control_logprob(self, batch, task, seed):
        # the same pooled representation the classifier reads, through a seeded random head
        captured = {}
        clf = self.model.classifier
        h = clf.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0]))
        try:
            self.model(**self._inputs(batch))
        finally:
            h.remove()
        x = captured["x"]
        if x.dim() == 3:  # RoBERTa-style heads take the whole sequence; use <s>
            x = x[:, 0]
        w = self._random_head(x.shape[-1], task.num_labels, seed, x)
        logp = torch.log_softmax(x @ w.T, dim=-1)
        target = batch["labels"] if "labels" in batch else torch.zeros(len(x), dtype=torch.long, device=x.device)
        return logp.gather(1, target.view(-1, 1)).squeeze(1)

    def unit_sites(self):
        return encoder_sites(self.model, self.model.base_model_prefix)


class _LabelWordMixin:
    """Label-word scoring shared by T5 and causal LMs."""

    logits_are_logprobs = True

    def task_names(self):
        from mtprune.tasks import TASKS

        return list(TASKS)

    def label_word_ids(self, task: TaskSpec) -> list[list[int]]:
        out = []
        for word in task.labels:
            ids = self.tokenizer(self._label_text(word), add_special_tokens=False)["input_ids"]
            if not ids:
                raise MtpruneError(f"the tokenizer turns label {word!r} into no tokens")
            out.append(list(ids))
        return out

    def _label_text(self, word: str) -> str:
        return word

    def _control_ids(self, task: TaskSpec, n: int, seed: int) -> list[int]:
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


class T5Adapter(_LabelWordMixin, ModelAdapter):
    """T5 text-to-text: ``"sst2 sentence: ..."`` in, each label's words scored out."""

    format = "t5"

    def prompt(self, task: TaskSpec, row: dict) -> str:
        order = task.t5_field_order or task.fields
        prefix = task.t5_prefix or (task.heads[0] if task.label_source else task.name)
        fields = dict(zip(task.fields, _fields_text(task, row)))
        return prefix + " " + " ".join(f"{f}: {fields[f]}" for f in order)

    def _eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []

    def encode(self, rows, task):
        enc = self.tokenizer([self.prompt(task, r) for r in rows], truncation=True,
                             max_length=self.max_length, padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], device=self.device)
        return batch

    def _target_logprob(self, batch, enc_out, targets: list[list[int]]) -> torch.Tensor:
        """Sum of log-probs of ``targets[b]`` as the decoder's output for example ``b``."""
        b = batch["input_ids"].shape[0]
        t = max(len(x) for x in targets)
        pad = self.model.config.pad_token_id or 0
        lab = torch.full((b, t), -100, dtype=torch.long, device=self.device)
        for i, ids in enumerate(targets):
            lab[i, : len(ids)] = torch.tensor(ids, device=self.device)
        dec_in = self.model._shift_right(lab.masked_fill(lab == -100, pad))
        out = self.model(encoder_outputs=enc_out, attention_mask=batch["attention_mask"],
                         decoder_input_ids=dec_in)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        mask = lab != -100
        tok = logp.gather(2, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (tok * mask).sum(1)

    def _encoder(self, batch):
        return self.model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def logits(self, batch, task):
        enc_out = self._encoder(batch)
        b = batch["input_ids"].shape[0]
        cols = [self._target_logprob(batch, enc_out, [ids + self._eos()] * b) for ids in self.label_word_ids(task)]
        return torch.stack(cols, dim=1)

    def control_logprob(self, batch, task, seed):
        enc_out = self._encoder(batch)
        ids = self._control_ids(task, batch["input_ids"].shape[0], seed)
        return self._target_logprob(batch, enc_out, [[i] for i in ids])

    def unit_sites(self):
        return t5_sites(self.model)


CAUSAL_PROMPT = "{fields}\nQuestion: which label fits: {labels}?\nAnswer:"


class CausalLMAdapter(_LabelWordMixin, ModelAdapter):
    """Decoder-only LMs: a prompt with the task's fields, then each label's words scored."""

    format = "causal"

    def prompt(self, task: TaskSpec, row: dict) -> str:
        fields = "\n".join(f"{f}: {t}" for f, t in zip(task.fields, _fields_text(task, row)))
        return CAUSAL_PROMPT.format(fields=fields, labels=", ".join(task.labels))

    def _label_text(self, word):
        return " " + word

    def encode(self, rows, task):
        prompts = [self.tokenizer(self.prompt(task, r), add_special_tokens=True)["input_ids"] for r in rows]
        keep = self.max_length - 8
        prompts = [p[-keep:] for p in prompts]  # keep the end: the question and "Answer:"
        batch = {"prompt_ids": prompts}
        if rows and "label" in rows[0]:
            batch["labels"] = torch.tensor([int(r["label"]) for r in rows], device=self.device)
        return batch

    def _continuation_logprob(self, prompts: list[list[int]], conts: list[list[int]]) -> torch.Tensor:
        """Sum of log-probs of each continuation after its prompt, right-padded in one batch."""
        seqs = [p + c for p, c in zip(prompts, conts)]
        t = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(seqs), t), pad, dtype=torch.long)
        att = torch.zeros((len(seqs), t), dtype=torch.long)
        tgt = torch.full((len(seqs), t), -100, dtype=torch.long)
        for i, (p, c) in enumerate(zip(prompts, conts)):
            s = p + c
            ids[i, : len(s)] = torch.tensor(s)
            att[i, : len(s)] = 1
            tgt[i, len(p) - 1 : len(s) - 1] = torch.tensor(c)  # position j predicts token j+1
        ids, att, tgt = ids.to(self.device), att.to(self.device), tgt.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=att).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        mask = tgt != -100
        tok = logp.gather(2, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (tok * mask).sum(1)

    def logits(self, batch, task):
        prompts = batch["prompt_ids"]
        cols = [self._continuation_logprob(prompts, [ids] * len(prompts)) for ids in self.label_word_ids(task)]
        return torch.stack(cols, dim=1)

    def control_logprob(self, batch, task, seed):
        prompts = batch["prompt_ids"]
        ids = self._control_ids(task, len(prompts), seed)
        return self._continuation_logprob(prompts, [[i] for i in ids])

    def unit_sites(self):
        return causal_sites(self.model)


# ----------------------------------------------------------------------------------------------
# loading


def _read_config(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise MtpruneError(f"{path} is not a model directory (no config.json)")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise MtpruneError(f"{cfg_file} is not valid JSON: {exc}") from None


def format_of_config(cfg: dict, files: set[str]) -> str:
    archs = " ".join(cfg.get("architectures") or [])
    if "heads.safetensors" in files and "tasks.json" in files:
        return "multitask"
    if cfg.get("model_type") in ("t5", "mt5", "umt5") or "ConditionalGeneration" in archs:
        return "t5"
    if "ForSequenceClassification" in archs:
        return "seqcls"
    if "ForCausalLM" in archs or "LMHeadModel" in archs:
        return "causal"
    return "unknown"


def detect_format(path: str) -> str:
    p = Path(path)
    cfg = _read_config(p)
    return format_of_config(cfg, {f.name for f in p.iterdir()})


def _fetch_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
        )
    except Exception as exc:
        raise MtpruneError(f"could not fetch {repo_id} from the Hugging Face hub: {type(exc).__name__}: {exc}") from None
    return Path(local)


def _load_tokenizer(path: Path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise MtpruneError(f"{path} has no usable tokenizer: {type(exc).__name__}: {exc}") from None
    return tok


def _safetensors_present(path: Path) -> None:
    if not any(f.suffix == ".safetensors" for f in path.iterdir()):
        raise MtpruneError(f"{path} has no .safetensors weights (mtprune loads no pickled weights)")


def load_heads(path: Path) -> dict[str, nn.Linear]:
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "heads.safetensors"))
    except Exception as exc:
        raise MtpruneError(f"{path / 'heads.safetensors'} does not load: {exc}") from None
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
    return heads


def load_adapter(name: str = "default", device: str = "cpu", trust_remote_code: bool = False,
                 max_length: int | None = None) -> ModelAdapter:
    """Load a model by name (``default``), local directory or hub id, behind its adapter."""
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                              AutoModelForSeq2SeqLM, AutoModelForSequenceClassification)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    resolved = assets.resolve_model(name)
    path = Path(resolved)
    if not path.exists():
        path = _fetch_hub(resolved)
    cfg_dict = _read_config(path)
    if "mtprune_pruned" in cfg_dict:
        from mtprune.pruning import load_pruned_adapter

        adapter = load_pruned_adapter(path, trust_remote_code=trust_remote_code)
        adapter.source = resolved
        return adapter.to(resolve_device(device))
    fmt = format_of_config(cfg_dict, {f.name for f in path.iterdir()})
    if fmt == "unknown":
        raise MtpruneError(
            f"{path} holds a {cfg_dict.get('model_type', 'unknown')} model with no task head: mtprune "
            "needs a multi-task directory (heads.safetensors), a sequence classifier, T5 or a causal LM"
        )
    _safetensors_present(path)
    kw = dict(dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code)
    tok = _load_tokenizer(path, trust_remote_code)
    try:
        if fmt == "multitask":
            meta = json.loads((path / "tasks.json").read_text())
            model = AutoModel.from_pretrained(str(path), add_pooling_layer=True, **kw) \
                if cfg_dict.get("model_type") == "bert" else AutoModel.from_pretrained(str(path), **kw)
            heads = load_heads(path)
            if not heads:
                raise MtpruneError(f"{path / 'heads.safetensors'} holds no heads")
            adapter = MultiTaskAdapter(model, tok, resolved, heads, meta,
                                       max_length or int(meta.get("max_length", 256)))
        elif fmt == "seqcls":
            model = AutoModelForSequenceClassification.from_pretrained(str(path), **kw)
            adapter = SeqClsAdapter(model, tok, resolved, max_length or 256)
        elif fmt == "t5":
            model = AutoModelForSeq2SeqLM.from_pretrained(str(path), **kw)
            adapter = T5Adapter(model, tok, resolved, max_length or 512)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(path), **kw)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            adapter = CausalLMAdapter(model, tok, resolved, max_length or 512)
    except MtpruneError:
        raise
    except Exception as exc:
        raise MtpruneError(f"could not load the model in {path}: {type(exc).__name__}: {exc}") from None
    _ = AutoConfig  # imported for symmetry with the hub path; config comes with the model
    return adapter.to(resolve_device(device))


def adapter_for(model: nn.Module, tokenizer, source: str = "<memory>", heads=None,
                tasks_meta: dict | None = None, max_length: int = 256) -> ModelAdapter:
    """Wrap an in-memory model (tests, notebooks) in the adapter its architecture needs."""
    cfg = model.config
    if heads is not None:
        return MultiTaskAdapter(model, tokenizer, source, heads, tasks_meta or {}, max_length)
    if getattr(cfg, "is_encoder_decoder", False):
        return T5Adapter(model, tokenizer, source, max_length)
    archs = type(model).__name__
    if "ForSequenceClassification" in archs:
        return SeqClsAdapter(model, tokenizer, source, max_length)
    if "CausalLM" in archs or "LMHead" in archs:
        return CausalLMAdapter(model, tokenizer, source, max_length)
    raise MtpruneError(f"no adapter for {archs}")


@dataclass(frozen=True)
class ModelSummary:
    source: str
    format: str
    parameters: int
    tasks: tuple[str, ...]


def single_task_classifier(adapter: MultiTaskAdapter, task: TaskSpec | str) -> SeqClsAdapter:
    """Materialise one task of a multi-task model as a stock ``*ForSequenceClassification``.

    The encoder and the task's head are copied (the input adapter is left as it is); the result
    computes exactly the multi-task model's logits for that task and saves with
    ``adapter.model.save_pretrained`` like any Hugging Face classifier.
    """
    import copy

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
    pruned = getattr(cfg, "mtprune_pruned", None)
    try:
        model = AutoModelForSequenceClassification.from_config(cfg)
    except ValueError as exc:
        raise MtpruneError(f"no sequence-classification class for {cfg.model_type}: {exc}") from None
    base = getattr(model, model.base_model_prefix)
    if pruned is not None:
        # per-layer sizes differ from the config's: take the pruned encoder module as it is
        base = copy.deepcopy(adapter.model)
        setattr(model, model.base_model_prefix, base)
    else:
        base.load_state_dict(adapter.model.state_dict())
    clf = model.classifier
    if not isinstance(clf, nn.Linear):
        raise MtpruneError(f"{type(model).__name__} has a non-linear classifier; cannot copy the head")
    with torch.no_grad():
        clf.weight.copy_(adapter.heads[head].weight)
        clf.bias.copy_(adapter.heads[head].bias)
    model.to(adapter.device)
    return SeqClsAdapter(model, adapter.tokenizer, f"{adapter.source}#{head}", adapter.max_length)
