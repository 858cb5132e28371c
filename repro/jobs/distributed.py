"""Data-parallel training: which rank this process is, its process group, gradient averaging.

A job runs as W processes (ranks): SLURM tasks started by submitit's srun (one per GPU, or
several on CPUs), torchrun's workers, or a single process. Every rank draws the same
*global* batch from the step's generator and trains on its contiguous slice of it; the
gradients are averaged over ranks, so with equal slices the update is the one a single
process computes on the whole global batch (the batch size the paper states):

    grad (1/B) sum_{i<B} l_i  =  (1/W) sum_r  grad (1/b) sum_{i in slice r} l_i,   b = B / W.

NCCL on GPUs, gloo on CPUs. Nothing here knows about diffusion.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

from repro.errors import UserError

# Ports for the rendezvous of SLURM jobs: derived from the job id, so all ranks agree without
# talking first and a requeued job (same id) finds the same port.
PORT_RANGE = (20000, 60000)


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks of its job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, results and logs of record."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    @property
    def backend(self) -> str:
        return "nccl" if torch.cuda.is_available() else "gloo"

    def shard(self, global_batch: int) -> slice:
        """This rank's contiguous slice of a global batch (which must divide evenly)."""
        if global_batch % self.world_size:
            raise UserError(f"global batch size {global_batch} does not split over {self.world_size} ranks: "
                            f"choose train.batch_size as a multiple of the number of tasks")
        b = global_batch // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)


def world_from_environment() -> World:
    """The world of this process: torchrun's variables, else submitit's SLURM tasks, else one process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:          # torchrun, or set by hand (tests)
        return World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                     env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)))
    if env.get("SUBMITIT_EXECUTOR") == "slurm":
        import submitit

        job = submitit.JobEnvironment()
        if job.num_tasks > 1:
            # One node: loopback, so the rendezvous needs no name resolution.
            addr = job.hostnames[0] if job.num_nodes > 1 else "127.0.0.1"
            port = random.Random(job.raw_job_id).randint(*PORT_RANGE)
            return World(job.global_rank, job.num_tasks, job.local_rank, addr, port)
    return World()


@contextlib.contextmanager
def process_group(world: World, timeout_s: float = 600.0) -> Iterator[World]:
    """Join the job's process group for the duration of the block (nothing to do for one rank)."""
    if world.world_size == 1:
        yield world
        return
    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
    if world.master_addr in ("127.0.0.1", "localhost"):
        # gloo finds its own address from the host name; on one node the loopback is enough.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(world.backend, init_method=f"tcp://{world.master_addr}:{world.master_port}",
                            rank=world.rank, world_size=world.world_size, timeout=timedelta(seconds=timeout_s))
    try:
        yield world
    finally:
        dist.destroy_process_group()


def average_gradients(parameters: Iterable[torch.nn.Parameter], world: World) -> None:
    """Replace each gradient by its mean over ranks (one all-reduce of all gradients)."""
    if world.world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Elementwise sum over ranks of a small tensor (a copy; the input is left alone)."""
    out = values.detach().clone()
    if world.world_size > 1:
        dist.all_reduce(out)
    return out


def barrier(world: World) -> None:
    if world.world_size > 1:
        dist.barrier()
