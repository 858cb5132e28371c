"""Per-batch resume state of sampling and evaluation jobs: every finished batch saved as it ends.

A job body that works through a fixed sequence of batches (Table 1's restorations, LPIPS
distances, a feature pass) hands each batch's computation to `BatchCheckpoints`: a batch
computed before a kill is read back instead of computed again, so a killed job resumes at the
next batch. The file is written atomically through repro.io, which records its sha256 in the
job's manifest (the store's scrub discards a damaged one and what was written after it).

Bit-identical resume needs two things the caller guarantees: each batch is computed the same
way whether or not the ones before it were (the same slice, the same batch size: a batched
network's float sums depend on the batch), and the random state a batch leaves behind is what
the next batch starts from. For a sampler that draws from one `torch.Generator` across batches
(Table 1's restorations), the generator's state after each batch is saved with it and
restored on resume, so an uninterrupted run keeps the numbers it had before resume existed.

The files are resume state (`checkpoint*`, repro.jobs.store.RESUME_STATE): only the job itself
reads them; they are kept after the job finishes, as training checkpoints are.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from repro.io import atomic_save_npz

FOLDER = "checkpoint_batches"
RNG = "_generator_state"    # the torch.Generator's state after the batch (uint8)


class BatchCheckpoints:
    """Saved batches under `<job>/checkpoint_batches/<tag>-<b>.npz`; without a job folder
    (`out=None`: a direct call, as in tests) every batch is simply computed.

    `sleep_s` (tests only, `sample.sleep_s` / `eval.sleep_s`) pauses after each computed batch
    so that a test can kill the job between two batches.
    """

    def __init__(self, out: Path | None, sleep_s: float = 0.0):
        self.out, self.sleep_s = out, float(sleep_s or 0.0)

    def path(self, tag: str, b: int) -> Path:
        assert self.out is not None
        return Path(self.out) / FOLDER / f"{tag}-{b:05d}.npz"

    def __call__(self, tag: str, b: int, compute: Callable[[], dict[str, np.ndarray]],
                 generator: torch.Generator | None = None) -> dict[str, np.ndarray]:
        """Batch `b` of the sequence `tag`: read back if saved (and `generator` set to the state it
        had after that batch), else computed by `compute()` and saved with the generator's state."""
        if self.out is None:
            return compute()
        path = self.path(tag, b)
        if path.is_file():   # written whole (atomic) and verified by the store's scrub when the job started
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            state = arrays.pop(RNG, None)
            if generator is not None:
                if state is None:
                    raise RuntimeError(f"{path} holds no generator state: resume state of another code version")
                generator.set_state(torch.from_numpy(state))
            return arrays
        arrays = compute()
        extra = {RNG: generator.get_state().numpy()} if generator is not None else {}
        atomic_save_npz(path, **arrays, **extra)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return arrays

    def tensor(self, tag: str, b: int, compute: Callable[[], torch.Tensor],
               generator: torch.Generator | None = None) -> torch.Tensor:
        """`__call__` for a batch that is one CPU tensor (saved exactly, dtype and all)."""
        arrays = self(tag, b, lambda: {"x": compute().detach().cpu().numpy()}, generator)
        return torch.from_numpy(arrays["x"])

    def saved(self, tag: str) -> int:
        """How many batches of `tag` are saved (tests, progress lines)."""
        if self.out is None:
            return 0
        return len(list((Path(self.out) / FOLDER).glob(f"{tag}-*.npz")))
