"""Linear layers, whatever their storage: ``nn.Linear`` keeps its weight as ``[out, in]``,
transformers' ``Conv1D`` (GPT-2) as ``[in, out]``. Every module that reads shapes, slices rows or
columns, or swaps a layer goes through these few functions.
"""

from __future__ import annotations

import torch
from torch import nn


def conv1d_class():
    """transformers' ``Conv1D`` (GPT-2's Linear with a transposed weight)."""
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def is_conv1d(layer: nn.Module) -> bool:
    return isinstance(layer, conv1d_class())


def check_linear(layer: nn.Module) -> None:
    if not isinstance(layer, nn.Linear) and not is_conv1d(layer):
        raise TypeError(f"expected nn.Linear or Conv1D, not {type(layer).__name__}")


def weight_out_in(layer: nn.Module) -> torch.Tensor:
    """The weight as an ``[out, in]`` view (a transpose for Conv1D)."""
    check_linear(layer)
    return layer.weight.T if is_conv1d(layer) else layer.weight


def out_features(layer: nn.Module) -> int:
    return int(weight_out_in(layer).shape[0])


def in_features(layer: nn.Module) -> int:
    return int(weight_out_in(layer).shape[1])


def has_bias(layer: nn.Module) -> bool:
    return getattr(layer, "bias", None) is not None


def row_sq_norms(layer: nn.Module) -> torch.Tensor:
    """Squared norm of each output row (float32)."""
    return weight_out_in(layer).detach().float().pow(2).sum(1)


def col_sq_norms(layer: nn.Module) -> torch.Tensor:
    """Squared norm of each input column (float32)."""
    return weight_out_in(layer).detach().float().pow(2).sum(0)


def set_module(model: nn.Module, path: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at ``path`` (``encoder.layer.0.output.dense``); returns the module it replaces."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, name)
    setattr(parent, name, new)
    return old


_EMPTY_CONV1D = None


def _empty_conv1d_class():
    """GPT-2's Conv1D that accepts zero input features (all its units pruned): returns the bias."""
    global _EMPTY_CONV1D
    if _EMPTY_CONV1D is None:
        Conv1D = conv1d_class()

        class EmptyInputConv1D(Conv1D):
            def forward(self, x):
                if self.weight.shape[0] == 0:
                    return self.bias.to(x.dtype).expand(*x.shape[:-1], self.nf).clone()
                return super().forward(x)

        _EMPTY_CONV1D = EmptyInputConv1D
    return _EMPTY_CONV1D


def make_linear(weight_oi: torch.Tensor, bias: torch.Tensor | None, like: nn.Module) -> nn.Module:
    """A layer of ``like``'s kind (Linear or Conv1D) holding ``weight_oi`` (``[out, in]``) and
    ``bias``, with ``like``'s ``requires_grad`` and training flag."""
    check_linear(like)
    grad = like.weight.requires_grad
    w = weight_oi.detach().clone()
    b = bias.detach().clone() if bias is not None else None
    n_out, n_in = w.shape
    if is_conv1d(like):
        cls = _empty_conv1d_class() if n_in == 0 else conv1d_class()
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new.nf, new.nx = n_out, n_in
        new.weight = nn.Parameter(w.T.contiguous(), requires_grad=grad)
        new.bias = nn.Parameter(b, requires_grad=grad) if b is not None else None
    else:
        new = nn.Linear.__new__(nn.Linear)
        nn.Module.__init__(new)
        new.in_features, new.out_features = n_in, n_out
        new.weight = nn.Parameter(w, requires_grad=grad)
        if b is not None:
            new.bias = nn.Parameter(b, requires_grad=grad)
        else:
            new.register_parameter("bias", None)
    new.training = like.training
    return new


def slice_linear(layer: nn.Module, keep_idx, dim: int = 0) -> nn.Module:
    """A new layer holding only the ``keep_idx`` outputs (``dim=0``) or inputs (``dim=1``).

    ``dim`` always means outputs (0) or inputs (1), whatever the storage. The bias follows the
    outputs. The input layer is left untouched; dtype, device and ``requires_grad`` are kept.
    """
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 (outputs) or 1 (inputs), not {dim}")
    check_linear(layer)
    w = weight_out_in(layer)
    idx = torch.as_tensor(keep_idx, dtype=torch.long, device=w.device).flatten()
    new_w = w.detach().index_select(dim, idx)
    b = layer.bias.detach() if has_bias(layer) else None
    if b is not None and dim == 0:
        b = b.index_select(0, idx)
    return make_linear(new_w, b, layer)
