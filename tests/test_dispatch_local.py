"""The local backend's worker pool (repro/dispatch/local.py): several jobs at once, each in its
own process at a fixed thread count, dependencies first; the numbers must not depend on how
many workers ran them, a failure stops what depends on it but not what does not, and bad
settings exit 2 before anything is written."""
from __future__ import annotations

import dataclasses
import json

import pytest

from repro.config import compose
from repro.dispatch import dispatch
from repro.dispatch.local import local_settings
from repro.errors import UserError
from repro.jobs.job import topological
from repro.jobs.state import JobFailed
from repro.jobs.store import JobStore
from repro.plan import features_job, plan
from repro.table import cli


def _tiny_table1(tmp_path):
    cfg = compose("1", "tiny", "local", [f"data.root={tmp_path / 'data'}"])
    return cfg, [row.job for row in plan(cfg)]


def _values(store, jobs):
    return {job.name: store.dir(job).result()["values"] for job in jobs}


def test_two_workers_give_the_numbers_of_one(tmp_path):
    cfg, jobs = _tiny_table1(tmp_path)
    lines: list[str] = []
    serial = dispatch(jobs, {**cfg.cluster, "workers": 1, "threads": 1}, tmp_path / "serial")
    pooled = dispatch(jobs, {**cfg.cluster, "workers": 2, "threads": 1}, tmp_path / "pooled", progress=lines.append)
    assert serial.ran == pooled.ran == len(topological(jobs)) > 2
    assert _values(JobStore(tmp_path / "serial"), jobs) == _values(JobStore(tmp_path / "pooled"), jobs)
    # one start and one finish line per job, and a job starts only after the jobs it reads finished
    order = {j.key: j for j in topological(jobs)}
    finished: set[str] = set()
    for line in lines[1:]:
        key = line.split("[")[-1].split("]")[0]
        if " started " in line:
            assert {d.key for d in order[key].deps.values()} <= finished, line
        else:
            assert " done " in line, line
            finished.add(key)
    assert finished == set(order)
    threads = {json.loads((JobStore(tmp_path / "pooled").dir(j).path / "result.json").read_text())
               ["provenance"]["torch_threads"] for j in order.values()}
    assert threads == {1}


def test_a_failed_job_stops_its_dependents_not_the_others(tmp_path):
    cfg, _ = _tiny_table1(tmp_path)
    good = features_job(cfg)
    broken = dataclasses.replace(good, config={**good.config, "data": {**good.config["data"], "name": "no-such-set"}},
                                 name="features/broken")
    dependent = dataclasses.replace(good, name="features/after-broken", deps={"features": broken})
    with pytest.raises((JobFailed, UserError), match="features/broken"):   # the worker's error, as run_job raised it
        dispatch([broken, dependent, good], {**cfg.cluster, "workers": 2, "threads": 1}, tmp_path / "jobs",
                 progress=None)
    store = JobStore(tmp_path / "jobs")
    assert store.dir(good).done and not store.dir(broken).done
    assert not store.dir(dependent).path.exists()


@pytest.mark.parametrize("cluster, message", [
    ({"workers": 0}, "cluster.workers=0 must be a positive integer or auto"),
    ({"workers": "many"}, "cluster.workers='many' must be a positive integer or auto"),
    ({"workers": 2, "threads": 0}, "cluster.threads=0 must be a positive integer or null"),
])
def test_bad_settings_are_refused(cluster, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        local_settings({"name": "local", **cluster})


def test_auto_is_one_worker_per_cpu_and_null_threads_is_torchs_default():
    import os

    workers, threads = local_settings({"name": "local", "workers": "auto", "threads": None})
    assert workers == len(os.sched_getaffinity(0)) and threads is None


def test_bad_workers_on_the_command_line_exit_2_before_anything_is_written(tmp_path, capsys):
    code = cli(["1", "--profile", "tiny", "--store", str(tmp_path / "jobs"), "--out", str(tmp_path / "tables"),
                f"data.root={tmp_path / 'data'}", "cluster.workers=0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cluster.workers=0" in err[0], err
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "tables").exists()
