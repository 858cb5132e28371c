"""Suite-wide settings: the test models are tiny, so one torch thread is faster than two
(OpenMP synchronisation dominates) and keeps timings steady on a shared 2-core machine."""
import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")   # for subprocesses the tests start
