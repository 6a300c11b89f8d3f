"""More than one process: ``torchrun --nproc_per_node N -m mtprune attribute ...``.

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment. :func:`init_from_env` joins them into one process group
(``gloo`` on the CPU, ``nccl`` on CUDA); the attribution methods then take every N-th batch of
examples (:func:`shard`) and add their partial sums together (:func:`all_reduce_sum`), so every
rank ends with the scores of all examples. Only rank 0 writes the cache and prints.

Nothing here pickles: flags and arrays travel as tensors.
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import numpy as np
import torch

from mtprune.errors import MtpruneError

T = TypeVar("T")


def env_world_size() -> int:
    """The number of processes torchrun started (1 when not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_active() -> bool:
    """True inside an initialised process group of two or more processes."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: str = "auto") -> str:
    """Join torchrun's process group when there is one; return the device this rank should use.

    Without torchrun (``WORLD_SIZE`` unset or 1) nothing happens and ``device`` comes back as is.
    """
    if env_world_size() <= 1:
        return device
    import torch.distributed as dist

    if not dist.is_available():
        raise MtpruneError("this torch build has no torch.distributed: run one process")
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise MtpruneError("--device cuda was asked for but no CUDA device is available")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        except Exception as exc:  # a rendezvous problem is the user's to fix
            raise MtpruneError(f"could not join the torchrun process group: {type(exc).__name__}: {exc}") from None
    return device


def destroy() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th one, starting at ``rank``.

    Callers shard whole batches (formed before sharding), so an example is computed in the same
    batch, with the same padding, whatever the number of processes.
    """
    return list(items[rank() :: world_size()])


def all_reduce_sum(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Element-wise sums over all ranks (a no-op in one process). Values come back on the CPU."""
    if not is_active():
        return {k: v.cpu() for k, v in tensors.items()}
    import torch.distributed as dist

    dev = _comm_device()
    out = {}
    for k in sorted(tensors):  # the same order on every rank
        t = tensors[k].to(dev).contiguous().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[k] = t.cpu()
    return out


def broadcast_int(value: int, src: int = 0) -> int:
    """``value`` on rank ``src``, given to every rank."""
    if not is_active():
        return value
    import torch.distributed as dist

    t = torch.tensor([int(value)], dtype=torch.long, device=_comm_device())
    dist.broadcast(t, src=src)
    return int(t.item())


def broadcast_arrays(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], src: int = 0) -> dict[str, np.ndarray]:
    """Float32 arrays of known shapes from rank ``src`` to every rank (other ranks pass {})."""
    if not is_active():
        return arrays
    import torch.distributed as dist

    dev = _comm_device()
    out = {}
    for k in sorted(shapes):
        if rank() == src:
            t = torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32)).to(dev)
        else:
            t = torch.empty(shapes[k], dtype=torch.float32, device=dev)
        dist.broadcast(t, src=src)
        out[k] = t.cpu().numpy()
    return out
