"""Model directories: loading any format, dense or pruned, and saving them.

* :func:`load_adapter` turns a model argument (``default``, a local directory, a hub id) into the
  adapter of its format (:mod:`mtprune.formats`). A dense directory loads with the format's
  ``from_pretrained``; a pruned one (``config.json`` holds ``mtprune_pruned`` with every site's
  size: the stock transformers classes assume one size for every layer) is built from its config,
  each site shrunk to its stored size (:func:`mtprune.pruning.shrink_site`), and its weights loaded
  strictly.
* :func:`save_model` writes an adapter as a Hugging Face style directory (``config.json``,
  ``model.safetensors``, the tokenizer, the format's own files, ``mask.json`` when given) that
  :func:`load_adapter` reloads; the directory appears whole or not at all.
  :func:`write_model` writes the same files into a directory that exists (training builds its
  model there before publishing it).

Weights load from safetensors only, and ``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from mtprune import assets, io
from mtprune.errors import MtpruneError
from mtprune.formats import (EvalAdapter, ModelAdapter, detect_format, format_for_module, get_format, prunable,
                             resolve_device)
from mtprune.formats.base import format_owning, load_tokenizer
from mtprune.formats.multitask import MultiTaskAdapter
from mtprune.masks import Mask
from mtprune.pruning import PRUNED_KEY, pruned_entry, shrink_site
from mtprune.units import canonical_name, group_sites

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHTS_FILE = "model.safetensors"
MASK_FILE = "mask.json"


# ----------------------------------------------------------------------------------------------
# reading


def read_config(path: Path) -> dict:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        raise MtpruneError(f"{path} is not a model directory (no config.json)")
    try:
        return json.loads(cfg_file.read_text())
    except json.JSONDecodeError as exc:
        raise MtpruneError(f"{cfg_file} is not valid JSON: {exc}") from None


def fetch_hub(repo_id: str) -> Path:
    """A hub model's files (config, safetensors weights, tokenizer) in the local hub cache."""
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
        )
    except Exception as exc:
        raise MtpruneError(f"could not fetch {repo_id} from the Hugging Face hub: {type(exc).__name__}: {exc}") from None
    return Path(local)


def local_path(name: str) -> tuple[str, Path]:
    """``(resolved, directory)`` of a model argument: a hub id is fetched into the hub cache."""
    resolved = assets.resolve_model(name)
    path = Path(resolved)
    return resolved, (path if path.exists() else fetch_hub(resolved))


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def model_format(path: Path, cfg: dict | None = None) -> type[ModelAdapter]:
    """The format of a model directory, or one clear error."""
    cfg = cfg if cfg is not None else read_config(path)
    entry = cfg.get(PRUNED_KEY)
    if entry is not None:
        if not isinstance(entry, dict) or not isinstance(entry.get("sizes"), dict):
            raise MtpruneError(f"{path / 'config.json'} has a malformed {PRUNED_KEY} entry")
        if entry.get("format"):
            fmt = get_format(entry["format"])
            if not issubclass(fmt, ModelAdapter):
                raise MtpruneError(f"{path / 'config.json'} names the {fmt.format} format, which has no torch model")
            return fmt
    fmt = detect_format(cfg, {f.name for f in path.iterdir()})
    if fmt is not None and not issubclass(fmt, ModelAdapter):  # read by its own loader (format_owning)
        fmt = None
    if fmt is None:
        raise MtpruneError(
            f"{path} holds a {cfg.get('model_type', 'unknown')} model with no task head: mtprune "
            "needs a multi-task directory (heads.safetensors), a sequence classifier, T5 or a causal LM"
        )
    return fmt


PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def compute_dtype(precision: str, device, cfg: dict | None = None) -> str:
    """The dtype the model computes in: ``auto`` is float32 on the CPU and, on a GPU, the dtype the
    checkpoint declares when it is a half-precision one (bf16/fp16), else float32."""
    if precision not in PRECISIONS:
        raise MtpruneError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    declared = (cfg or {}).get("dtype") or (cfg or {}).get("torch_dtype")
    on_gpu = torch.device(device).type == "cuda"
    return declared if on_gpu and declared in ("bfloat16", "float16") else "float32"


def load_adapter(name: str = "default", device: str = "cpu", trust_remote_code: bool = False,
                 max_length: int | None = None, precision: str = "float32",
                 device_map: str | None = None) -> EvalAdapter:
    """Load a model by name (``default``), local directory or hub id, behind its format's adapter:
    a :class:`~mtprune.formats.ModelAdapter` (prunable), or for a directory an evaluate-only format
    reads by itself (an ONNX export) that format's :class:`~mtprune.formats.EvalAdapter`.

    ``precision`` is the dtype the model computes in (``auto``: :func:`compute_dtype`). Before any
    weight is read, a model that does not fit in the device's free memory stops with one line
    saying what it needs and what there is (:func:`mtprune.memory.check_fits`). ``device_map="auto"``
    spreads a dense model too large for one GPU over all of them (transformers' placement).
    """
    from mtprune import memory

    _quiet_transformers()
    resolved, path = local_path(name)
    owner = format_owning(path) if path.is_dir() else None
    if owner is not None:  # a directory its format reads by itself (an ONNX export)
        return owner.load_directory(path, resolved, device, max_length)
    cfg = read_config(path)
    fmt = model_format(path, cfg)
    if not any(f.suffix == ".safetensors" for f in path.iterdir()):
        raise MtpruneError(f"{path} has no .safetensors weights (mtprune loads no pickled weights)")
    target = resolve_device(device)
    dtype = compute_dtype(precision, target, cfg)
    if device_map is None:
        memory.check_fits(path, target, dtype, name=Path(resolved).name)
    tok = load_tokenizer(path, trust_remote_code)
    fmt.prepare_tokenizer(tok)
    entry = cfg.get(PRUNED_KEY)
    try:
        if entry is None:
            model = fmt.from_pretrained(path, dtype=DTYPES[dtype], use_safetensors=True,
                                        trust_remote_code=trust_remote_code,
                                        **({"device_map": device_map} if device_map else {}))
            if device_map:
                return fmt.open(model, tok, path, resolved, max_length)
        else:
            model = _load_pruned_model(path, fmt, entry, trust_remote_code).to(DTYPES[dtype])
            max_length = max_length or (int(entry["max_length"]) if entry.get("max_length") else None)
        adapter = fmt.open(model, tok, path, resolved, max_length)
    except MtpruneError:
        raise
    except Exception as exc:
        what = "pruned model" if entry is not None else "model"
        raise MtpruneError(f"could not load the {what} in {path}: {type(exc).__name__}: {exc}") from None
    return adapter.to(target)


def _load_pruned_model(path: Path, fmt: type[ModelAdapter], entry: dict, trust_remote_code: bool) -> nn.Module:
    """The stock model of the config, each site shrunk to its stored size, weights loaded strictly."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    if not (path / WEIGHTS_FILE).is_file():
        raise MtpruneError(f"{path} has no {WEIGHTS_FILE}")
    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    # built with the stock initialisation (a second or so for the default model): skipping it
    # (no_init_weights) also skips the tying of embeddings and buffer set-up in transformers 5
    model = fmt.build(config, trust_remote_code).float()
    sites = {s.name: s for s in fmt.model_sites(model)}
    sizes = {canonical_name(k): int(v) for k, v in entry["sizes"].items()}  # decoder.3.groups: decoder.3.kv
    unknown = set(sizes) - set(sites)
    if unknown:
        raise MtpruneError(f"{path}: stored sizes name sites this model lacks: {sorted(unknown)[:3]}")
    for name, n in sizes.items():
        s = sites[name]
        if n > s.n_units or n < 0:
            raise MtpruneError(f"{path}: site {name} stored with {n} units, the config allows {s.n_units}")
        if n != s.n_units and not s.view_of:  # a view shrinks with the site it is a view of
            shrink_site(model, s, torch.arange(n))
    now = {s.name: s.n_units for s in fmt.model_sites(model)}
    wrong = [k for k, n in sizes.items() if now[k] != n]
    if wrong:
        raise MtpruneError(f"{path}: stored sizes do not fit together: {wrong[0]} has {now[wrong[0]]} units, "
                           f"the config says {sizes[wrong[0]]}")
    tied = _tied_names(model)
    state = load_file(str(path / WEIGHTS_FILE))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise MtpruneError(f"{path}/{WEIGHTS_FILE} does not match its config: "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def adapter_for(model: nn.Module, tokenizer, source: str = "<memory>", heads=None,
                tasks_meta: dict | None = None, max_length: int = 256) -> ModelAdapter:
    """Wrap an in-memory model (tests, notebooks) in the adapter of its format; an encoder with
    ``heads`` (``{task: nn.Linear}``) is a multi-task model."""
    if heads is not None:
        return MultiTaskAdapter(model, tokenizer, source, heads, tasks_meta or {}, max_length)
    fmt = format_for_module(model)
    if fmt is None:
        raise MtpruneError(f"no adapter for {type(model).__name__}")
    return fmt(model, tokenizer, source, max_length)


def list_models() -> list[dict]:
    """The models under ``MTPRUNE_HOME/models`` with their format and tasks (``mtprune models``)."""
    out = []
    for name, path in assets.model_dirs():
        owner = format_owning(path)
        try:
            fmt = owner.format if owner is not None else model_format(path).format
        except MtpruneError:
            fmt = "unknown"
        try:
            tasks = list(json.loads((path / "tasks.json").read_text()).get("tasks", {}))
        except (OSError, ValueError, AttributeError):
            tasks = []
        out.append({"name": name, "dir": path.name, "path": str(path), "format": fmt, "tasks": tasks})
    return out


def source_signature(name: str) -> tuple[str, str]:
    """``(resolved source, signature)`` of a model argument; the signature changes when the
    directory's files do (the dashboard reloads an edited directory)."""
    resolved = assets.resolve_model(name.strip())
    p = Path(resolved)
    if not p.exists():
        return resolved, "hub"
    if not p.is_dir():
        raise MtpruneError(f"{name} is not a model directory")
    parts = []
    for f in sorted(p.iterdir()):
        try:
            st = f.stat()
        except OSError:
            continue
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return resolved, io.stable_hash(parts, 20)


def source_dtype(adapter) -> str | None:
    """The dtype the adapter's source directory declares in its config.json, if any."""
    try:
        cfg = json.loads((Path(str(adapter.source)) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    d = cfg.get("dtype") or cfg.get("torch_dtype")
    return d if d in DTYPES else None


# ----------------------------------------------------------------------------------------------
# writing


def as_dtype(d) -> torch.dtype | None:
    if d is None or isinstance(d, torch.dtype):
        return d
    s = str(d).replace("torch.", "")
    if s not in DTYPES:
        raise MtpruneError(f"dtype must be one of {', '.join(DTYPES)}, not {d!r}")
    return DTYPES[s]


def _tied_names(module: nn.Module) -> dict[str, str]:
    """name -> the first name sharing its storage, for every later duplicate."""
    seen, tied = {}, {}
    for name, t in module.state_dict().items():
        if not t.numel():
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if key in seen:
            tied[name] = seen[key]
        else:
            seen[key] = name
    return tied


def _state_for_save(module: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict with tied (storage-sharing) duplicates dropped, contiguous, cast."""
    tied = _tied_names(module)
    out = {}
    for name, t in module.state_dict().items():
        if name in tied:
            continue
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.to("cpu").contiguous().clone()
    return out


def _check_mask_describes(adapter, mask: Mask) -> None:
    per_group = {g: [s.n_units for s in ss] for g, ss in group_sites(adapter.unit_sites()).items()}
    for g in mask.groups:
        if per_group.get(g) != mask.kept_per_layer(g):
            raise MtpruneError(
                f"the mask does not describe this model: it keeps {g} units {mask.kept_per_layer(g)}, "
                f"the model has {per_group.get(g)} (save the adapter that hard_prune returned)"
            )


def measured_entry(result) -> dict:
    """What a saved model records of an evaluation of itself (:class:`mtprune.evaluation.EvalResult`)."""
    return {"split": result.split, "rows": result.n, **{m: round(v, 6) for m, v in result.metrics.items()},
            "intervals": {m: [round(x, 6) for x in iv] for m, iv in result.intervals.items()}}


def write_model(adapter, out: Path, mask: Mask | None = None, dtype=None, measured: dict | None = None) -> Path:
    """Write the adapter's files into the existing directory ``out``.

    A model that was pruned (its config records it) or is saved with a ``mask`` gets the
    ``mtprune_pruned`` entry with every site's size, the mask's settings, the model it came from
    and, per task, what was measured on it (``measured``: ``{task: EvalResult}``; nothing else is
    claimed: a multi-task model's ``tasks.json`` drops the accuracies its source recorded); a dense
    model is a plain Hugging Face directory. ``dtype`` (float32, float16, bfloat16; default: the
    model's) is the stored dtype.
    """
    import copy

    from safetensors.torch import save_file

    dt = as_dtype(dtype)
    adapter = prunable(adapter)
    if mask is not None:
        _check_mask_describes(adapter, mask)
    model = adapter.model
    cfg = copy.deepcopy(model.config)
    prev = getattr(cfg, PRUNED_KEY, None)
    if prev is not None or mask is not None:
        sizes = {s.name: s.n_units for s in adapter.unit_sites()}
        if prev and prev.get("sizes") == sizes and (mask is None or prev.get("mask_meta")):
            entry = dict(prev)  # as hard_prune recorded it
        else:
            entry = pruned_entry(prev, adapter.format, sizes, mask, adapter.max_length)
        entry.update(format=adapter.format, max_length=int(adapter.max_length))
        entry["measured"] = {t: measured_entry(r) for t, r in (measured or {}).items()}
        setattr(cfg, PRUNED_KEY, entry)
    cfg.architectures = [type(model).__name__]
    if dt is not None:
        cfg.dtype = dt
    cfg.save_pretrained(str(out))
    save_file(_state_for_save(model, dt), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(str(out))
    adapter.save_extra(out, dt, getattr(cfg, PRUNED_KEY, None))
    if mask is not None:
        (out / MASK_FILE).write_text(json.dumps(mask.to_dict(), indent=1))
    return out


def check_out_dir(out: Path, overwrite: bool) -> Path:
    """``out`` expanded; an error when it is a file, or a non-empty directory without ``overwrite``."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise MtpruneError(f"{out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MtpruneError(f"{out} exists and is not empty (pass overwrite / --overwrite to replace it)")
    return out


def save_model(adapter, out_dir: str | os.PathLike, mask: Mask | None = None, dtype=None,
               overwrite: bool = False, measured: dict | None = None) -> Path:
    """Write the adapter's model as a directory :func:`load_adapter` reloads (see
    :func:`write_model`). The directory appears whole or not at all (written beside it, then
    renamed). An existing non-empty ``out_dir`` is an error unless ``overwrite``."""
    out = check_out_dir(out_dir, overwrite)
    as_dtype(dtype)  # a bad dtype fails before anything is written
    with io.staging_dir(out) as tmp:
        write_model(adapter, tmp, mask, dtype, measured)
        return io.publish_dir(tmp, out)


def zip_model(adapter, mask: Mask | None = None, folder: str = "pruned", dtype=None,
              measured: dict | None = None) -> bytes:
    """The bytes of a zip holding the model directory :func:`save_model` writes, in ``folder/``."""
    with tempfile.TemporaryDirectory() as d:
        return io.zip_directory(save_model(adapter, Path(d) / folder, mask, dtype=dtype, measured=measured), folder)
