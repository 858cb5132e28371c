"""Data-parallel training (repro/jobs/distributed.py, repro/jobs/train.py) without SLURM.

Two gloo ranks on this machine, each training on its half of every global batch, must
follow the single-process run with the same global batch: same loss curve and weights up
to float rounding (the two halves are averaged instead of summed in one go).
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from repro.config import compose
from repro.errors import UserError
from repro.jobs.distributed import World
from repro.jobs.runner import run_job
from repro.jobs.store import JobStore
from repro.plan import plan


def train_job(data_root: Path, steps: int = 6):
    cfg = compose("1", "tiny", "local", [f"data.root={data_root}", f"train.steps={steps}", "train.log_every=1"])
    row = next(r for r in plan(cfg) if r.name == "MT-Diffusion")
    return row.job.deps["samples"].deps["model"]


def _toy_problem() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    net = torch.nn.Linear(5, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net, torch.randn(8, 5, generator=g), torch.randn(8, 2, generator=g)


def _rank(rank: int, world_size: int, port: int, job, store: str) -> None:
    import os

    from repro.jobs.distributed import average_gradients, process_group, world_from_environment

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    world = world_from_environment()
    with process_group(world):     # the averaged gradient of a toy least-squares problem
        net, x, y = _toy_problem()
        s = world.shard(len(x))
        ((net(x[s]) - y[s]) ** 2).mean().backward()
        average_gradients(net.parameters(), world)
        torch.save([p.grad for p in net.parameters()], Path(store).parent / f"grad{rank}.pt")
    run_job(job, store)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_tile_the_global_batch():
    batch = 12
    for w in (1, 2, 3, 4):
        idx = torch.cat([torch.arange(batch)[World(rank=r, world_size=w).shard(batch)] for r in range(w)])
        assert torch.equal(idx, torch.arange(batch))
    with pytest.raises(UserError, match="does not split over 5 ranks"):
        World(rank=0, world_size=5).shard(batch)


def test_two_gloo_ranks_follow_the_single_process_run(tmp_path):
    job = train_job(tmp_path / "data")
    run_job(job, tmp_path / "single")
    mp.start_processes(_rank, args=(2, _free_port(), job, str(tmp_path / "ddp")), nprocs=2, join=True,
                       start_method="spawn")
    # The mean over ranks of the halves' gradients is the whole batch's gradient, on every rank
    # (a sum instead of a mean would hide from the weights below: Adam does not see the scale).
    net, x, y = _toy_problem()
    ((net(x) - y) ** 2).mean().backward()
    for rank in range(2):
        for got, want in zip(torch.load(tmp_path / f"grad{rank}.pt"), (p.grad for p in net.parameters())):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    single, ddp = JobStore(tmp_path / "single").dir(job), JobStore(tmp_path / "ddp").dir(job)
    assert ddp.result()["world_size"] == 2 and single.result()["world_size"] == 1
    # Only rank 0 keeps the books; rank 1 logs beside it.
    assert (ddp / "log.rank1.txt").exists() and json.loads((ddp / "status.json").read_text())["state"] == "done"
    curve_1 = json.loads((single / "loss_curve.json").read_text())
    curve_2 = json.loads((ddp / "loss_curve.json").read_text())
    assert [c["step"] for c in curve_2] == [c["step"] for c in curve_1] == list(range(6))
    for a, b in zip(curve_1, curve_2):
        assert set(a) == set(b)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    w1 = torch.load(single / "model.pt", weights_only=True)
    w2 = torch.load(ddp / "model.pt", weights_only=True)
    lr, steps = 1e-3, 6        # the tiny profile's learning rate; no weight moves further than lr * steps
    for part in ("model", "ema"):
        diff = torch.cat([(w2[part][k] - v).abs().flatten() for k, v in w1[part].items()])
        # Adam divides by the gradient's running RMS: where a gradient is all rounding (the
        # zero-initialised output biases) the step's sign can flip. Everywhere else: rounding.
        assert (diff < 1e-6).float().mean() > 0.99, part
        assert diff.max() < 0.05 * lr * steps, part
