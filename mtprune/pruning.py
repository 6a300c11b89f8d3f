"""Applying a :class:`~mtprune.masks.Mask`: soft (hooks) or hard (sliced Linear layers), and the
save / load of hard-pruned models with their per-layer sizes.

* :func:`soft_prune` zeroes the pruned units with hooks while a ``with`` block runs: reversible,
  for quick previews; works on every site, hard-prunable or not.
* :func:`hard_prune` returns a new adapter over a deep copy of the model whose Linear layers are
  sliced: an FFN neuron is a row of the in projections (up/gate) and a column of the out
  projection; a head is ``head_dim`` rows of Q, K and V and ``head_dim`` columns of O. Biases of
  out projections stay, so the sliced model computes what the soft-masked one does. The input
  adapter is never changed.
* A layer may lose every FFN neuron (its FFN then outputs the out projection's bias) or every head:
  the attention module is then replaced by :class:`NoHeadsAttention`, which keeps the module's
  (now empty) children, so parameter names do not change, and returns the out projection's bias.
* :func:`save_pruned` writes Hugging Face style files (``config.json`` with an ``mtprune_pruned``
  entry holding every site's size, ``model.safetensors``, the tokenizer; for the multi-task format
  also ``heads.safetensors`` and ``tasks.json``; ``mask.json`` when given). The stock transformers
  classes assume one size for every layer, so :func:`load_pruned_adapter` (called by
  :func:`mtprune.models.load_adapter` whenever a config has ``mtprune_pruned``) builds the stock
  model from the config, shrinks each site to its stored size, then loads the weights strictly.

Sites whose heads cannot be removed one by one (T5's shared relative position bias, grouped
key/value heads) raise :class:`MtpruneError` in hard pruning when a head of theirs is pruned.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from mtprune.errors import MtpruneError
from mtprune.masks import Mask, full_mask
from mtprune.units import UnitSite, group_sites, soft_mask

PRUNED_KEY = "mtprune_pruned"
# attributes of attention modules that count heads, and that hold heads x head size
_HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_heads", "n_head")
_HEAD_SIZE_ATTRS = ("all_head_size", "split_size", "inner_dim")


def _conv1d_cls():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it
        return None
    return Conv1D


def _is_conv1d(layer) -> bool:
    cls = _conv1d_cls()
    return cls is not None and isinstance(layer, cls)


def _make_empty_safe_conv1d():
    Conv1D = _conv1d_cls()

    class EmptyInputConv1D(Conv1D):
        """GPT-2's Conv1D with zero input features (all its units pruned): returns the bias."""

        def forward(self, x):
            if self.weight.shape[0] == 0:
                out = self.bias.to(x.dtype).expand(*x.shape[:-1], self.nf)
                return out.clone()
            return super().forward(x)

    return EmptyInputConv1D


_EMPTY_CONV1D = None


def _empty_conv1d_cls():
    global _EMPTY_CONV1D
    if _EMPTY_CONV1D is None:
        _EMPTY_CONV1D = _make_empty_safe_conv1d()
    return _EMPTY_CONV1D


def slice_linear(layer: nn.Module, keep_idx, dim: int = 0) -> nn.Module:
    """A new layer holding only the ``keep_idx`` outputs (``dim=0``) or inputs (``dim=1``).

    Works on ``nn.Linear`` (weight ``[out, in]``) and transformers' ``Conv1D`` (weight ``[in, out]``);
    ``dim`` always means outputs (0) or inputs (1), whatever the storage. The bias follows the
    outputs. The input layer is left untouched; dtype, device and ``requires_grad`` are kept.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (outputs) or 1 (inputs), not {dim}")
    w = layer.weight
    idx = torch.as_tensor(keep_idx, dtype=torch.long, device=w.device).flatten()
    conv = _is_conv1d(layer)
    if not conv and not isinstance(layer, nn.Linear):
        raise TypeError(f"slice_linear needs nn.Linear or Conv1D, not {type(layer).__name__}")
    wdim = (1 - dim) if conv else dim  # Conv1D stores [in, out]
    new_w = w.detach().index_select(wdim, idx).clone()
    b = layer.bias
    new_b = None
    if b is not None:
        new_b = b.detach().index_select(0, idx).clone() if dim == 0 else b.detach().clone()
    if conv:
        n_in, n_out = new_w.shape
        cls = _empty_conv1d_cls() if n_in == 0 else _conv1d_cls()
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.nf = n_out
        new.nx = n_in
        new.weight = nn.Parameter(new_w, requires_grad=w.requires_grad)
        new.bias = nn.Parameter(new_b, requires_grad=b.requires_grad) if new_b is not None else None
        new.training = layer.training
        return new
    n_out, n_in = new_w.shape
    new = nn.Linear.__new__(nn.Linear)
    nn.Module.__init__(new)
    new.in_features, new.out_features = n_in, n_out
    new.weight = nn.Parameter(new_w, requires_grad=w.requires_grad)
    if new_b is not None:
        new.bias = nn.Parameter(new_b, requires_grad=b.requires_grad)
    else:
        new.register_parameter("bias", None)
    new.training = layer.training
    return new


class NoHeadsAttention(nn.Module):
    """Stands in for an attention module whose every head was pruned.

    It keeps the original module's children (the empty Q/K/V and, where the module owns it, the
    out projection), so parameter names are unchanged, and returns ``(out, None)``: the out
    projection of an empty input (its bias) when it owns the out projection, else an empty
    ``[..., 0]`` tensor for the caller's out projection.
    """

    def __init__(self, original: nn.Module, out_child: str | None):
        super().__init__()
        for name, child in original.named_children():
            self.add_module(name, child)
        for name, p in original.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in original.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in original._non_persistent_buffers_set)
        self.out_child = out_child
        self.replaces = type(original).__name__
        for a in _HEAD_COUNT_ATTRS + _HEAD_SIZE_ATTRS:
            if hasattr(original, a):
                setattr(self, a, 0)

    def forward(self, hidden_states=None, *args, **kwargs):
        if hidden_states is None:
            hidden_states = kwargs.get("query", kwargs.get("x"))
        empty = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
        if self.out_child is None:
            return empty, None
        return self.get_submodule(self.out_child)(empty), None

    def extra_repr(self):
        return f"replaces={self.replaces}, heads=0"


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _unit_index(units: torch.Tensor, width: int, n_units: int, chunks: int = 1) -> torch.Tensor:
    """Row/column indices of ``units`` (each ``width`` wide), repeated for each fused chunk."""
    base = (units.view(-1, 1) * width + torch.arange(width).view(1, -1)).flatten()
    return torch.cat([base + c * n_units * width for c in range(chunks)]) if chunks > 1 else base


def _relative(path: str, prefix: str) -> str | None:
    return path[len(prefix) + 1:] if path.startswith(prefix + ".") else None


def _shrink_site(model: nn.Module, site: UnitSite, keep_units: torch.Tensor) -> None:
    """Slice one site of ``model`` in place down to ``keep_units`` (sorted unit indices)."""
    keep_units = keep_units.to(torch.long).cpu()
    n_keep = int(keep_units.numel())
    out_cols = _unit_index(keep_units, site.width, site.n_units)
    _set_module(model, site.out_proj, slice_linear(model.get_submodule(site.out_proj), out_cols, dim=1))
    for ip in site.in_proj:
        rows = _unit_index(keep_units, site.width, site.n_units, ip.chunks)
        _set_module(model, ip.path, slice_linear(model.get_submodule(ip.path), rows, dim=0))
    if site.kind != "heads" or not site.attn_module:
        return
    attn = model.get_submodule(site.attn_module)
    if n_keep == 0:
        _set_module(model, site.attn_module,
                    NoHeadsAttention(attn, _relative(site.out_proj, site.attn_module)))
        return
    for a in _HEAD_COUNT_ATTRS:
        if isinstance(getattr(attn, a, None), int):
            setattr(attn, a, n_keep)
    for a in _HEAD_SIZE_ATTRS:
        if isinstance(getattr(attn, a, None), int):
            setattr(attn, a, n_keep * site.width)


def _sites_to_cut(adapter, mask: Mask) -> tuple[list[UnitSite], dict[str, torch.Tensor]]:
    sites = adapter.unit_sites()
    keep = mask.keep_for_sites(sites)
    cut = [s for s in sites if s.name in keep and not bool(keep[s.name].all())]
    return cut, keep


@contextmanager
def soft_prune(adapter, mask: Mask):
    """Zero the units ``mask`` prunes while the block runs (hooks; the model is not changed)."""
    cut, keep = _sites_to_cut(adapter, mask)
    with soft_mask(adapter.model, cut, {s.name: keep[s.name] for s in cut}) as names:
        yield names


def _copy_adapter(adapter):
    new = copy.copy(adapter)
    new.model = copy.deepcopy(adapter.model)
    if hasattr(adapter, "heads"):
        new.heads = copy.deepcopy(adapter.heads)
    if hasattr(adapter, "tasks_meta"):
        new.tasks_meta = copy.deepcopy(adapter.tasks_meta)
    new._fingerprint = None
    return new


def site_sizes(adapter) -> dict[str, int]:
    """``{site.name: units}`` of the adapter's model as it is now."""
    return {s.name: s.n_units for s in adapter.unit_sites()}


def _pruned_entry(prev: dict | None, adapter_format: str, sizes: dict[str, int], mask: Mask | None,
                  max_length: int | None) -> dict:
    """The ``mtprune_pruned`` config entry: format, every site's size, the last mask's header
    (earlier masks of a model pruned more than once go to ``history``)."""
    prev = dict(prev or {})
    entry = {"format": adapter_format, "sizes": dict(sizes)}
    history = list(prev.get("history", []))
    if mask is not None:
        if prev.get("mask_meta"):
            history.append(prev["mask_meta"])
        meta = {**mask.to_header(), "kept": mask.kept(), "total": mask.total()}
        meta.pop("n_units", None)
        entry["mask_meta"] = meta
    elif prev.get("mask_meta"):
        entry["mask_meta"] = prev["mask_meta"]
    if history:
        entry["history"] = history
    if max_length is not None:
        entry["max_length"] = int(max_length)
    return entry


def hard_prune(adapter, mask: Mask):
    """A new adapter over a deep copy of the model with the pruned units sliced away.

    The input adapter and its model are not changed. Logits equal those of :func:`soft_prune`
    with the same mask (to float rounding).
    """
    cut, keep = _sites_to_cut(adapter, mask)
    bad = [s.name for s in cut if not s.hard_prunable]
    if bad:
        raise MtpruneError(
            f"{type(adapter.model).__name__} heads cannot be removed physically ({', '.join(bad[:3])}"
            f"{'...' if len(bad) > 3 else ''}: shared position bias or grouped key/value heads); "
            "prune its FFN neurons, or use a soft mask for heads"
        )
    new = _copy_adapter(adapter)
    for s in cut:
        _shrink_site(new.model, s, torch.nonzero(keep[s.name]).flatten())
    prev = getattr(adapter.model.config, PRUNED_KEY, None)
    setattr(new.model.config, PRUNED_KEY,
            _pruned_entry(prev, adapter.format, site_sizes(new), mask, adapter.max_length))
    new.model.eval()
    return new


def count_parameters(adapter, mask: Mask | None = None) -> int:
    """Parameters of the model (heads included) after removing what ``mask`` prunes.

    Counts each pruned unit's weights in its in projections (rows, with their biases) and its out
    projection (columns), whether or not the site can be hard-pruned.
    """
    total = adapter.num_parameters()
    if mask is None:
        return total
    cut, keep = _sites_to_cut(adapter, mask)
    removed = 0
    for s in cut:
        gone = int((~keep[s.name]).sum())
        out = adapter.model.get_submodule(s.out_proj)
        n_out = out.weight.shape[1] if _is_conv1d(out) else out.weight.shape[0]
        removed += gone * s.width * n_out
        for ip in s.in_proj:
            m = adapter.model.get_submodule(ip.path)
            n_in = m.weight.shape[0] if _is_conv1d(m) else m.weight.shape[1]
            per_row = n_in + (1 if m.bias is not None else 0)
            removed += gone * s.width * ip.chunks * per_row
    return total - removed


# ----------------------------------------------------------------------------------------------
# files


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _dtype(d) -> torch.dtype | None:
    if d is None or isinstance(d, torch.dtype):
        return d
    s = str(d).replace("torch.", "")
    if s not in _DTYPES:
        raise MtpruneError(f"dtype must be one of {', '.join(_DTYPES)}, not {d!r}")
    return _DTYPES[s]


def source_dtype(adapter) -> str | None:
    """The dtype the adapter's source directory declares in its config.json, if any."""
    p = Path(str(adapter.source))
    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return None
    d = cfg.get("dtype") or cfg.get("torch_dtype")
    return d if d in _DTYPES else None


def _state_for_save(module: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """The state dict with tied (storage-sharing) duplicates dropped, contiguous, cast."""
    out, seen = {}, {}
    for name, t in module.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype) if t.numel() else None
        if key is not None and key in seen:
            continue  # tied to seen[key]
        if key is not None:
            seen[key] = name
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[name] = t.to("cpu").contiguous().clone()
    return out


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


def save_pruned(adapter, out_dir: str | os.PathLike, mask: Mask | None = None, dtype=None,
                overwrite: bool = False) -> Path:
    """Write the adapter's model as a directory :func:`mtprune.models.load_adapter` reloads.

    ``dtype`` (``float32``, ``float16``, ``bfloat16``; default: the model's) is the dtype of the
    stored weights. The directory appears whole or not at all (written beside it, then renamed).
    An existing non-empty ``out_dir`` is an error unless ``overwrite``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise MtpruneError(f"{out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MtpruneError(f"{out} exists and is not empty (pass overwrite / --overwrite to replace it)")
    dt = _dtype(dtype)
    sites = adapter.unit_sites()
    sizes = {s.name: s.n_units for s in sites}
    if mask is not None:
        per_group = {g: [s.n_units for s in ss] for g, ss in group_sites(sites).items()}
        for g in mask.groups:
            if per_group.get(g) != mask.kept_per_layer(g):
                raise MtpruneError(
                    f"the mask does not describe this model: it keeps {g} units {mask.kept_per_layer(g)}, "
                    f"the model has {per_group.get(g)} (save the adapter that hard_prune returned)"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent)))
    try:
        os.chmod(tmp, 0o755)
        model = adapter.model
        cfg = copy.deepcopy(model.config)
        prev = getattr(cfg, PRUNED_KEY, None)
        if prev and prev.get("sizes") == sizes and (mask is None or prev.get("mask_meta")):
            entry = dict(prev)  # as hard_prune recorded it
        else:
            entry = _pruned_entry(prev, adapter.format, sizes, mask, adapter.max_length)
        entry.update(format=adapter.format, max_length=int(adapter.max_length))
        setattr(cfg, PRUNED_KEY, entry)
        cfg.architectures = [type(model).__name__]
        if dt is not None:
            cfg.dtype = dt
        cfg.save_pretrained(str(tmp))
        save_file(_state_for_save(model, dt), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        adapter.tokenizer.save_pretrained(str(tmp))
        if adapter.format == "multitask":
            heads = _state_for_save(adapter.heads, dt)
            save_file(heads, str(tmp / "heads.safetensors"), metadata={"format": "pt"})
            (tmp / "tasks.json").write_text(json.dumps(adapter.tasks_meta or {}, indent=1))
        if mask is not None:
            (tmp / "mask.json").write_text(json.dumps(mask.to_dict(), indent=1))
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=str(out.parent)))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _build_model(fmt: str, config, trust_remote_code: bool):
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification)

    kw = dict(trust_remote_code=trust_remote_code)
    # built with the stock initialisation (a second or so for the default model): skipping it
    # (no_init_weights) also skips the tying of embeddings and buffer set-up in transformers 5
    if True:
        if fmt == "multitask":
            if config.model_type == "bert":
                model = AutoModel.from_config(config, add_pooling_layer=True, **kw)
            else:
                model = AutoModel.from_config(config, **kw)
        elif fmt == "seqcls":
            model = AutoModelForSequenceClassification.from_config(config, **kw)
        elif fmt == "t5":
            model = AutoModelForSeq2SeqLM.from_config(config, **kw)
        elif fmt == "causal":
            model = AutoModelForCausalLM.from_config(config, **kw)
        else:
            raise MtpruneError(f"unknown pruned model format {fmt!r}")
    return model.float()


def load_pruned_adapter(path, trust_remote_code: bool = False):
    """Load a directory written by :func:`save_pruned`, with its per-layer sizes."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from mtprune import models as M

    path = Path(path)
    cfg_dict = M._read_config(path)
    entry = cfg_dict.get(PRUNED_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("sizes"), dict):
        raise MtpruneError(f"{path / 'config.json'} has a malformed {PRUNED_KEY} entry")
    files = {f.name for f in path.iterdir()}
    fmt = entry.get("format") or M.format_of_config(cfg_dict, files)
    if fmt not in M.FORMATS:
        raise MtpruneError(f"{path}: unknown model format {fmt!r} in {PRUNED_KEY}")
    if "model.safetensors" not in files:
        raise MtpruneError(f"{path} has no model.safetensors")
    tok = M._load_tokenizer(path, trust_remote_code)
    max_length = int(entry.get("max_length") or (256 if fmt in ("multitask", "seqcls") else 512))
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = _build_model(fmt, config, trust_remote_code)
        if fmt == "multitask":
            meta = json.loads((path / "tasks.json").read_text()) if "tasks.json" in files else {}
            heads = M.load_heads(path) if "heads.safetensors" in files else {}
            if not heads:
                raise MtpruneError(f"{path} holds no task heads (heads.safetensors)")
            adapter = M.MultiTaskAdapter(model, tok, str(path), heads, meta, max_length)
        elif fmt == "seqcls":
            adapter = M.SeqClsAdapter(model, tok, str(path), max_length)
        elif fmt == "t5":
            adapter = M.T5Adapter(model, tok, str(path), max_length)
        else:
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            adapter = M.CausalLMAdapter(model, tok, str(path), max_length)
        sizes = {k: int(v) for k, v in entry["sizes"].items()}
        sites = {s.name: s for s in adapter.unit_sites()}
        unknown = set(sizes) - set(sites)
        if unknown:
            raise MtpruneError(f"{path}: stored sizes name sites this model lacks: {sorted(unknown)[:3]}")
        for name, n in sizes.items():
            s = sites[name]
            if n > s.n_units or n < 0:
                raise MtpruneError(f"{path}: site {name} stored with {n} units, the config allows {s.n_units}")
            if n != s.n_units:
                _shrink_site(model, s, torch.arange(n))
        tied = _tied_names(model)
        state = load_file(str(path / "model.safetensors"))
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise MtpruneError(
                f"{path}/model.safetensors does not match its config: "
                f"missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    except MtpruneError:
        raise
    except Exception as exc:
        raise MtpruneError(f"could not load the pruned model in {path}: {type(exc).__name__}: {exc}") from None
    return adapter


__all__ = [
    "NoHeadsAttention",
    "count_parameters",
    "full_mask",
    "hard_prune",
    "load_pruned_adapter",
    "save_pruned",
    "site_sizes",
    "slice_linear",
    "soft_prune",
]
