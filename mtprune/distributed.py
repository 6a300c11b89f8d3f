"""More than one process: ``torchrun --nproc_per_node N -m mtprune attribute|sweep|unseen|quota|transfer ...``.

torchrun starts N copies of the command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address in the environment. :func:`init_from_env` joins them into one process group
(``gloo`` on the CPU, ``nccl`` on CUDA).

* Attribution: the methods take every N-th batch of examples (:func:`shard`) and add their partial
  sums together (:func:`all_reduce_sum`), so every rank ends with the scores of all examples. Only
  rank 0 writes the cache and prints.
* Experiments: the rows are dealt out instead (:func:`mtprune.experiments.core.run_points`): every
  rank evaluates whole groups of points on its own device, in :func:`local` mode (attribution
  inside runs as in one process; the disk cache lets one process compute a key while the others
  wait for it), and after every round the new rows travel to every rank (:func:`gather_json`);
  rank 0 writes the table.

Nothing here pickles: flags, arrays and rows travel as tensors (rows as JSON bytes).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
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


_LOCAL = [0]  # > 0 inside local(): this process acts alone


def group_active() -> bool:
    """True inside an initialised process group of two or more processes (even in :func:`local`)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_active() -> bool:
    """True when collective work is on: a process group of two or more, outside :func:`local`."""
    return not _LOCAL[0] and group_active()


@contextmanager
def local():
    """Within the block this process works alone (attribution computes all its batches here and
    sums nothing across processes): what each rank does with its own share of an experiment."""
    _LOCAL[0] += 1
    try:
        yield
    finally:
        _LOCAL[0] -= 1


def group_rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if group_active() else 0


def group_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if group_active() else 1


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


def _plain(o):
    """JSON for numpy scalars and the like."""
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def gather_json(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank (``[obj]`` in one process). JSON bytes in
    uint8 tensors: nothing is pickled."""
    if not group_active():
        return [json.loads(json.dumps(obj, default=_plain))]
    import torch.distributed as dist

    dev = _comm_device()
    data = json.dumps(obj, default=_plain).encode()
    n = torch.tensor([len(data)], dtype=torch.long, device=dev)
    sizes = [torch.zeros_like(n) for _ in range(group_size())]
    dist.all_gather(sizes, n)
    width = max(int(x.item()) for x in sizes)
    buf = torch.zeros(width, dtype=torch.uint8, device=dev)
    buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev)
    bufs = [torch.zeros_like(buf) for _ in range(group_size())]
    dist.all_gather(bufs, buf)
    return [json.loads(bytes(b[: int(k.item())].cpu().numpy().tobytes())) for b, k in zip(bufs, sizes)]


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
