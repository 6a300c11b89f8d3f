"""The peak memory a block of work reached: CUDA's own counters on a GPU, torch's profiler
(``profile_memory``) on the CPU. What the memory tests and the scale benchmark measure with."""

from __future__ import annotations


class PeakMemory:
    """``with PeakMemory(device) as pm: ...`` then ``pm.peak``: the most bytes torch held at once in
    the block beyond what it held when the block began (a GPU: ``max_memory_allocated``; the CPU:
    the allocations and frees torch's profiler records, in order)."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.peak = 0
        self._prof = None

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
        else:
            from torch.profiler import ProfilerActivity, profile

            self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._prof.__enter__()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device) - self._start)
            return False
        self._prof.__exit__(*exc)
        events = sorted(self._prof.events(), key=lambda e: e.time_range.start)
        now = peak = 0
        for e in events:
            now += int(getattr(e, "self_cpu_memory_usage", 0) or 0)
            peak = max(peak, now)
        self.peak = peak
        return False
