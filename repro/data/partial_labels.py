"""Partial-label mapping files of DiffusionMTL (Ye & Xu, CVPR 2024): which tasks each training image has.

Two formats exist (see design/diffusionmtl.md, section 1.2):

- **PASCAL** (`data/ssl_mapping/pascal/new_{onelabel,randomlabels}.pth`, the authors' own):
  a pickled dict ``image id (numpy.str_) -> list of T ints in {0, 1}``, columns in the
  internal task order ``[semseg, human_parts, sal, normals, edge]``. Written by
  ``torch.save``; its numpy-string keys make torch >= 2.6 refuse it under the default
  ``weights_only=True``.
- **NYUD-v2** (`data/ssl_mapping/nyud_low/{onelabel,randomlabels}.pth`, MTPSL's):
  ``{"labels_weights": float tensor [N, 3]}``, row i = training sample i in MTPSL's file
  order, columns ``[semseg, depth, normals]``. Rows are looked up by sample *index*, not by
  name (the released code's name lookup cannot read it: DiffusionMTL issue #3).

Both are read **without executing code**: a pickle can call any importable function while
loading, and these files come from the internet. Torch-format files (a zip holding
``data.pkl``) go through torch's own restricted "weights-only" unpickler with exactly the
numpy globals a numpy string key needs added to its allowlist; plain pickles go through
`_RestrictedUnpickler`, which resolves only the same short list. Anything else is refused
with a UserError naming the global, before it is called.
"""
from __future__ import annotations

import codecs
import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from repro.errors import UserError
from repro.io import atomic_save_torch

PASCAL_TASKS = ("semseg", "human_parts", "sal", "normals", "edge")
NYUD_TASKS = ("semseg", "depth", "normals")

# (module, name) pairs a mapping file may reference. numpy >= 2 spells its core module
# `numpy._core`, numpy 1.x (the authors' files, 2024) `numpy.core`; both resolve to the same
# objects. `scalar` rebuilds a numpy.str_ key from (dtype, bytes), `_reconstruct` + ndarray
# + dtype rebuild an array. No builtins are allowed: dict, list, int, str and float need no
# global (they are pickle opcodes), and a builtin such as eval or exec is exactly the danger.
# Protocol-2 pickles (torch.save's) spell bytes as _codecs.encode(str, "latin1"): pure.
_NUMPY_CORE = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "scalar")] = _NUMPY_CORE.scalar
    _ALLOWED[(_module, "_reconstruct")] = _NUMPY_CORE._reconstruct
_ALLOWED[("_codecs", "encode")] = codecs.encode
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("numpy", "ndarray")] = np.ndarray
# numpy >= 1.25 gives every dtype its own class (StrDType, Int64DType, ...); the dtype a
# pickle rebuilds is an instance of one, and torch checks the class of what it BUILDs.
_DTYPE_CLASSES = [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", ())) if n.endswith("DType")]
for _cls in _DTYPE_CLASSES:
    _ALLOWED[("numpy.dtypes", _cls.__name__)] = _cls


class _RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the globals in `_ALLOWED` and refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def safe_load(path: str | Path) -> Any:
    """Read a torch-saved or plain-pickled file without running code from it (module docstring).

    A missing file, or one that references anything outside the allowlist, is a UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"partial-label mapping {path} not found: check the ssl_mapping path in the data config")
    try:
        if zipfile.is_zipfile(path):
            safe = [(obj, f"{module}.{name}") for (module, name), obj in _ALLOWED.items()]
            with torch.serialization.safe_globals(safe):
                return torch.load(path, map_location="cpu", weights_only=True)
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except Exception as e:  # nothing ran: whatever failed, the file is not a plain mapping
        reason = str(e).strip().splitlines()
        reason = next((line for line in reason if "global" in line.lower() or "unsupported" in line.lower()),
                      reason[0] if reason else type(e).__name__)
        raise UserError(f"refusing to read partial-label mapping {path}: it is not a plain mapping "
                        f"({reason[:300]}); use the authors' file as released") from e


# ----------------------------------------------------------------------------------------------
# PASCAL format: dict image id -> 0/1 list


def load_pascal_mapping(path: str | Path, tasks: tuple[str, ...] = PASCAL_TASKS) -> dict[str, np.ndarray]:
    """``{image id: bool [len(tasks)]}`` from an authors'-format mapping file."""
    obj = safe_load(path)
    if not isinstance(obj, Mapping):
        raise UserError(f"partial-label mapping {path} holds a {type(obj).__name__}, expected a dict of image id -> "
                        f"{len(tasks)} flags ({', '.join(tasks)})")
    out: dict[str, np.ndarray] = {}
    for key, flags in obj.items():
        row = np.asarray(flags)
        if row.shape != (len(tasks),) or not np.isin(row, (0, 1)).all():
            raise UserError(f"partial-label mapping {path}: entry {str(key)!r} is {flags!r}, expected {len(tasks)} "
                            f"flags in {{0, 1}} for ({', '.join(tasks)})")
        out[str(key)] = row.astype(bool)
    return out


def save_pascal_mapping(path: str | Path, mapping: Mapping[str, np.ndarray]) -> Path:
    """Write ``{id: flags}`` as the authors do: numpy.str_ keys, lists of python ints, torch.save."""
    return atomic_save_torch(path, {np.str_(k): [int(v) for v in flags] for k, flags in mapping.items()})


# ----------------------------------------------------------------------------------------------
# NYUD-v2 (MTPSL) format: {"labels_weights": [N, 3]} by sample index


def load_nyud_mapping(path: str | Path, n_samples: int | None = None,
                      tasks: tuple[str, ...] = NYUD_TASKS) -> np.ndarray:
    """bool ``[N, len(tasks)]``: row i = training sample i. `n_samples` checks N against the dataset."""
    obj = safe_load(path)
    weights = obj.get("labels_weights") if isinstance(obj, Mapping) else None
    if weights is None:
        raise UserError(f"partial-label mapping {path} has no 'labels_weights' entry (MTPSL's NYUD-v2 format)")
    w = np.asarray(weights.numpy() if isinstance(weights, torch.Tensor) else weights)
    if w.ndim != 2 or w.shape[1] != len(tasks) or not np.isin(w, (0, 1)).all():
        raise UserError(f"partial-label mapping {path}: labels_weights has shape {w.shape}, expected [N, {len(tasks)}] "
                        f"of 0/1 for ({', '.join(tasks)})")
    if n_samples is not None and len(w) != n_samples:
        raise UserError(f"partial-label mapping {path} has {len(w)} rows but the training split has {n_samples} samples")
    return w.astype(bool)


def save_nyud_mapping(path: str | Path, flags: np.ndarray) -> Path:
    """Write bool/0-1 ``[N, T]`` flags in MTPSL's format (float tensor under 'labels_weights')."""
    return atomic_save_torch(path, {"labels_weights": torch.as_tensor(np.asarray(flags), dtype=torch.float32)})

