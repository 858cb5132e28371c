"""Every distinct paper-profile network at full size on this machine: build, one training
step and one sampling call at batch 1, with wall time, CPU time and peak memory each.

Each network runs in a fresh process (spawned) so that its peak RSS, the process's
high-water mark, is its own: weights, gradients, AdamW state and activations. The CPU
time is what the same work costs on an idle machine with this thread count.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from repro.bench.measure import peak_rss_bytes
from repro.bench.networks import build, sampling_call, spec_classifiers, spec_networks, train_step

MB = 2**20


def paper_network(kind: str, name: str, spec: Any, device: str, threads: int, folder: str) -> dict[str, Any]:
    """One paper network in this (fresh) process: build, one training step and one sampling
    call at batch 1 (a classifier: forward and backward); wall and CPU times, peak RSS."""
    from repro.bench.networks import with_random_autoencoder
    from repro.tasks.image_label import build_classifier

    torch.set_num_threads(threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if kind == "classifier":
        block, res = spec
        clf = build_classifier(block, res, 1000).to(device)
        t1 = time.perf_counter()
        x, t = torch.randn(1, 3, res, res, device=device), torch.tensor([500], device=device)
        clf(x, t).logsumexp(-1).sum().backward()
        row = {"parameters": sum(p.numel() for p in clf.parameters()), "build_s": t1 - t0,
               "train_step_s": time.perf_counter() - t1}
    else:
        config = with_random_autoencoder(spec, Path(folder))
        built = build(config)
        t1 = time.perf_counter()
        loss = train_step(config, built, 1, device=device)()
        t2 = time.perf_counter()
        sampling_call(config, built, 1, device=device)()
        row = {"parameters": sum(p.numel() for p in built.model.parameters()), "build_s": t1 - t0,
               "train_step_s": t2 - t1, "sampling_call_s": time.perf_counter() - t2, "loss": loss}
    row.update(network=name, cpu_s=time.process_time() - cpu0, peak_rss_mb=peak_rss_bytes() / MB)
    if device == "cuda":
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / MB
    return row


def bench_paper_configs(device: str) -> list[dict[str, Any]]:
    """Every distinct paper-profile network at full size, each in a fresh process so that its
    peak RSS is its own (the process's high-water mark: weights, AdamW state, activations)."""
    import multiprocessing

    jobs = [("network", net.name, net.config, net.used_by) for net in spec_networks("paper")]
    jobs += [("classifier", name, (block, res), [name]) for name, block, res in spec_classifiers("paper")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = multiprocessing.get_context("spawn")
        for kind, name, spec, used_by in jobs:
            with ctx.Pool(1) as pool:
                row = pool.apply(paper_network, (kind, name, spec, device, torch.get_num_threads(), tmp))
            rows.append({**row, "used_by": used_by})
    return rows
