"""Measurements of the benchmark: median wall time, FLOPs, the machine's matmul rate, peak memory.

Timings on a shared machine are noisy; medians of repeated runs after a warm-up, timed
round-robin across the things compared, and ratios taken within one run (a variant
against ADM, a fast path against the default, achieved FLOP/s against the same run's
matmul rate), are what is comparable.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], iters: int, warmup: int = 2, device: torch.device | str = "cpu") -> float:
    """Median wall time of `fn` over `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], Any]], iters: int, warmup: int = 2,
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """Median wall time of each function, timed round-robin (a, b, c, a, b, c, ...).

    On a shared machine the load drifts over seconds; interleaving exposes every function
    to the same drift, so that their ratios (the overheads this benchmark reports) stay
    meaningful when the absolute times do not.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (matmuls, convolutions, attention; forward and backward),
    counted by torch's FlopCounterMode: the work a GPU's tensor cores do. Elementwise ops
    (norms, activations, the optimiser update) are not counted."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def matmul_rate(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                n: int | None = None, iters: int = 5) -> float:
    """FLOP/s of an n x n matmul on `device`: the practical peak this run can compare with."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, iters, warmup=1, device=device)


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Highest resident set size of this process so far (getrusage, kilobytes on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory above the level at entry while the block runs.

    CUDA: torch's allocator statistics (exact). CPU: the process RSS, sampled every
    millisecond by a thread (large tensors are mmap'ed and returned to the OS when freed,
    so RSS follows the live tensors; a peak shorter than the sampling period can be missed).
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 1e-3):
        self.device, self.interval_s = torch.device(device), interval_s
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self._peak, rss_bytes()) - self._base


class SavedActivations:
    """Bytes of the tensors autograd keeps for backward while the block runs (distinct
    storages, parameters excluded): the activation memory of a training step, exact and
    independent of the allocator, on any device.

    Gradient checkpointing shows up here directly: the blocks it wraps save nothing
    (torch's checkpoint installs its own saved-tensor hooks inside them and recomputes in
    backward), so only what lives between checkpointed blocks is counted.
    """

    def __init__(self, model: torch.nn.Module):
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._storages: dict[int, int] = {}
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._params:
            self._storages[ptr] = storage.nbytes()
        return t

    def __enter__(self) -> "SavedActivations":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self.bytes = sum(self._storages.values())
