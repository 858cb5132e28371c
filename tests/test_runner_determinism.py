"""`cluster.deterministic`: the runner turns torch's deterministic algorithms on or off in the
process that runs a job, sets what cuBLAS needs, and records it in the job's provenance."""
from __future__ import annotations

import pytest
import torch

from repro.errors import UserError
from repro.jobs import runner
from repro.jobs.job import Job


@pytest.fixture
def torch_state(monkeypatch):
    """Leave torch's global determinism setting (and the cuBLAS variable) as the test found them."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")      # recorded, so that teardown restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.benchmark = before[2]


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (None, None)])
def test_setting_takes_true_false_or_null(value, expected):
    assert runner.deterministic_setting({"name": "local", "deterministic": value}) is expected


@pytest.mark.parametrize("value", ["maybe", 1, 0.5])
def test_any_other_setting_is_a_user_error(value):
    with pytest.raises(UserError, match="cluster.deterministic"):
        runner.deterministic_setting({"name": "local", "deterministic": value})


def test_the_setting_reaches_the_job_and_its_provenance(tmp_path, monkeypatch, torch_state):
    seen = []

    def body(cfg, out, deps):   # what the job body sees of torch's setting
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()))
        return {"value": 1}

    monkeypatch.setattr(runner, "body", lambda kind: body)
    torch.use_deterministic_algorithms(False)
    on = runner.run_job(Job("features", "features/on", {"x": 1}), tmp_path, deterministic=True)
    assert seen[-1] == (True, True)
    prov = on["provenance"]
    assert prov["deterministic_algorithms"] is True and prov["deterministic_warn_only"] is True
    assert prov["cublas_workspace_config"] == runner.CUBLAS_WORKSPACE and not torch.backends.cudnn.benchmark

    off = runner.run_job(Job("features", "features/off", {"x": 2}), tmp_path, deterministic=False)
    assert seen[-1][0] is False and off["provenance"]["deterministic_algorithms"] is False

    torch.use_deterministic_algorithms(True, warn_only=True)   # null: the process's setting is left as it is
    kept = runner.run_job(Job("features", "features/kept", {"x": 3}), tmp_path, deterministic=None)
    assert seen[-1] == (True, True) and kept["provenance"]["deterministic_algorithms"] is True


def test_a_user_cublas_setting_is_kept(monkeypatch, torch_state):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    runner.set_deterministic(True)
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
