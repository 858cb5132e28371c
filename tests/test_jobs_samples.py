"""The one samples format: write / read per kind, restorations part by part, bad arrays refused."""
from __future__ import annotations

import numpy as np
import pytest

from repro.errors import UserError
from repro.jobs import samples


def imgs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)


def test_round_trip_of_every_kind(tmp_path):
    cases = {"generations": {"images": imgs(3, 0), "labels": np.array([1, -1, 2])},
             "translations": {"source": imgs(3, 1), "truth": imgs(3, 2), "generated": imgs(3, 3)},
             "joint": {"images": imgs(3, 4), "representations": np.ones((3, 5), np.float32)}}
    for kind, arrays in cases.items():
        d = tmp_path / kind
        samples.write(d, kind, arrays)
        back = samples.read(d)
        assert back.kind == kind and len(back) == 3 and back.arrays.keys() == arrays.keys()
        for k, v in arrays.items():
            assert np.array_equal(back[k], v) and back[k].dtype == v.dtype
        assert samples.path(d).name == samples.FILE


def test_restorations_accumulate_mask_counts(tmp_path):
    original = imgs(2, 0)
    for m in ("4", "0"):
        samples.write(tmp_path, "restorations", {"original": original, "masked": imgs(2, int(m) + 1),
                                                 "restored": imgs(2, int(m) + 2),
                                                 "mask": np.ones((2, 4, 4), np.uint8)}, part=m)
    back = samples.read(tmp_path)
    assert back.parts() == ["4", "0"]
    r4 = back.restorations(4)
    assert np.array_equal(r4["original"], original) and np.array_equal(r4["masked"], imgs(2, 5))
    assert np.array_equal(back.restorations("0")["restored"], imgs(2, 2))


def test_undeclared_arrays_are_refused(tmp_path):
    with pytest.raises(ValueError, match="generations samples hold"):
        samples.write(tmp_path, "generations", {"images": imgs(1, 0)})
    with pytest.raises(ValueError, match="generations samples hold"):
        samples.write(tmp_path, "generations", {"images": imgs(1, 0), "labels": np.zeros(1), "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="unknown kind"):
        samples.write(tmp_path, "videos", {})
    assert not samples.exists(tmp_path)


def test_a_job_of_the_older_layout_is_named_for_resampling(tmp_path):
    np.savez(tmp_path / "restored_m4.npz", restored=imgs(1, 0))
    with pytest.raises(UserError, match=f"{tmp_path} holds samples in an older layout .*rm -r {tmp_path}"):
        samples.read(tmp_path)
