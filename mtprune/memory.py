"""Memory: what a model needs before it loads, and what the machine has.

:func:`checkpoint_parameters` counts a directory's parameters from its safetensors headers (no
weight is read), :func:`check_fits` compares what they need in the compute dtype with the memory
free on the device and stops with one line *before* loading when they do not fit.
``MTPRUNE_MEMORY_LIMIT`` (``8GB``, ``512MB``, bytes) caps what mtprune believes it has.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mtprune.errors import MtpruneError

GB = 1024**3
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1, "bool": 1,
               "int64": 8, "int32": 4, "int16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
                       "U8": "uint8", "BOOL": "bool", "I64": "int64", "I32": "int32", "I16": "int16",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
# loading briefly holds more than the weights (the checkpoint's tensors while they are copied)
LOAD_HEADROOM = 1.1


def parse_bytes(text) -> int:
    """``8GB``, ``512MB``, ``1.5G``, ``1000000`` -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise MtpruneError(f"a memory size reads like 8GB or 512MB, not {text!r}")
    return int(float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_"))


def human_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 1024**2:.0f} MB"


def checkpoint_parameters(path: str | os.PathLike) -> dict[str, int]:
    """``{stored dtype: parameters}`` of the ``*.safetensors`` files of a model directory, read
    from their headers."""
    import json
    import struct

    out: dict[str, int] = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, t in header.items():
            if name == "__metadata__":
                continue
            numel = 1
            for d in t["shape"]:
                numel *= int(d)
            dt = _SAFETENSORS_DTYPES.get(t["dtype"], t["dtype"].lower())
            out[dt] = out.get(dt, 0) + numel
    return out


def available_bytes(device) -> int:
    """Bytes free for a model on ``device`` now (the CPU: the system's available memory; a GPU: its
    free memory), at most ``MTPRUNE_MEMORY_LIMIT`` when that is set."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        free = torch.cuda.mem_get_info(dev)[0]
    else:
        free = _cpu_available()
    limit = os.environ.get("MTPRUNE_MEMORY_LIMIT")
    return min(free, parse_bytes(limit)) if limit else free


def _cpu_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def weights_bytes(parameters: dict[str, int], dtype: str) -> int:
    """Bytes the weights take once loaded in ``dtype`` (integer buffers keep their size)."""
    size = DTYPE_BYTES[dtype]
    return sum(n * (size if dt.startswith(("float", "bfloat")) else DTYPE_BYTES.get(dt, 1))
               for dt, n in parameters.items())


def check_fits(path, device, dtype: str, name: str | None = None) -> int:
    """Bytes the model in ``path`` needs in ``dtype``; one clear line when ``device`` has less free."""
    params = checkpoint_parameters(path)
    need = int(weights_bytes(params, dtype) * LOAD_HEADROOM)
    have = available_bytes(device)
    if need > have:
        total = sum(params.values())
        smaller = "" if dtype in ("bfloat16", "float16") else f" ({human_bytes(need // 2)} in bfloat16: --precision bfloat16)"
        raise MtpruneError(
            f"{name or Path(path).name} needs about {human_bytes(need)} to load ({total / 1e9:.2f}B parameters in "
            f"{dtype}){smaller}, and {device} has {human_bytes(have)} free: use a machine with more memory, "
            f"a GPU, or a smaller model")
    return need
