"""SLURM dispatch without a cluster: the reachability check, resources, how a table's DAG is
cut into job arrays chained by dependencies (submitit and squeue replaced by recorders), the
waiting driver's failure reports and the status listing. The real cluster: test_cluster_slurm.py.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

import repro.dispatch.slurm as slurm_mod
from repro.dispatch import dispatch
from repro.dispatch.resources import check_world, resources
from repro.dispatch.slurm import executor_parameters, wait_slurm
from repro.config import compose
from repro.errors import UserError
from repro.io import atomic_write_json
from repro.jobs.job import topological
from repro.jobs.state import JobFailed, submitted_id
from repro.jobs.store import JobStore
from repro.plan import plan
from repro.status import report
from repro.table import cli


def fake_tools(folder: Path, sinfo: str) -> Path:
    """sbatch, squeue, scontrol that do nothing and a sinfo with the given shell body."""
    folder.mkdir()
    for tool, script in (("sbatch", "exit 0"), ("squeue", "exit 0"), ("scontrol", "exit 0"), ("sinfo", sinfo)):
        p = folder / tool
        p.write_text(f"#!/bin/sh\n{script}\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("tools, needle", [
    (None, "sbatch, squeue, sinfo, scontrol not found on PATH"),
    ("echo 'slurm_load_partitions: Unable to contact slurm controller (connect failure)' >&2; exit 1",
     "SLURM controller is not reachable (sinfo: slurm_load_partitions: Unable to contact slurm controller"),
])
def test_slurm_unreachable_exits_2_with_one_line_before_writing_anything(tmp_path, monkeypatch, capsys, tools, needle):
    path = tmp_path / "bin"
    if tools is None:
        path.mkdir()
    else:
        fake_tools(path, tools)
    monkeypatch.setenv("PATH", str(path))
    code = cli(["1", "--profile", "tiny", "--cluster", "slurm", "--store", str(tmp_path / "jobs"),
                "--out", str(tmp_path / "tables"), f"data.root={tmp_path / 'data'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: --cluster slurm: ") and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]     # no store, tables or data


def test_missing_partition_is_named_with_the_ones_that_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake_tools(tmp_path / "bin", "printf 'debug\\ngpu\\n'")))
    code = cli(["1", "--profile", "tiny", "--cluster", "slurm", "cluster.partition=h100", "--store",
                str(tmp_path / "jobs"), "--out", str(tmp_path / "tables")])
    assert code == 2
    assert "partition 'h100' does not exist: set cluster.partition to one of debug, gpu" in capsys.readouterr().err


def slurm_cfg(tmp_path: Path, *overrides: str):
    # the calibration rows (reference_rows) are plain evaluate jobs; without them the DAG is easy to count
    return compose("1", "tiny", "slurm", [f"data.root={tmp_path / 'data'}", "reference_rows=[]", *overrides])


def test_resources_follow_the_profile_and_the_kind(tmp_path):
    paper = compose("1", "paper", "slurm", []).cluster
    train, evaluate = resources(paper, "train"), resources(paper, "evaluate")
    assert train["gpus_per_node"] == 8 and train["timeout_min"] >= 3 * 24 * 60      # days on a node of GPUs
    assert evaluate["gpus_per_node"] < train["gpus_per_node"] and evaluate["timeout_min"] < train["timeout_min"]
    params = executor_parameters(compose("1", "paper", "slurm", ["cluster.partition=gpu", "cluster.account=proj",
                                                                 "+cluster.sbatch.mail-type=END"]).cluster, "train")
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "proj"
    assert params["slurm_additional_parameters"] == {"mail-type": "END"}
    assert params["mem_gb"] == train["mem_gb"] * train["tasks_per_node"]       # per task -> per node
    tiny = slurm_cfg(tmp_path).cluster
    assert "gpus_per_node" not in executor_parameters(tiny, "train")            # CPU cluster: no GRES asked
    with pytest.raises(UserError, match="timeout_min=2 is too short"):
        resources(slurm_cfg(tmp_path, "cluster.by_profile.tiny.sample.timeout_min=2").cluster, "sample")
    three_ranks = slurm_cfg(tmp_path, "cluster.by_profile.tiny.train.tasks_per_node=3")
    trainings = [j for j in topological([r.job for r in plan(three_ranks)]) if j.kind == "train"]
    with pytest.raises(UserError, match="train.batch_size=8 does not split over 3 ranks"):
        check_world(trainings, three_ranks.cluster)
    check_world(trainings, slurm_cfg(tmp_path, "cluster.by_profile.tiny.train.tasks_per_node=4").cluster)


class Recorder:
    """Stands in for submitit.AutoExecutor: records each sbatch call and numbers jobs like SLURM."""

    calls: list = []
    ids = itertools.count(100)

    def __init__(self, folder, cluster, slurm_max_num_timeout):
        assert cluster == "slurm" and Path(folder).is_absolute() and slurm_max_num_timeout == 10
        self.folder, self.params, self.pending = Path(folder), {}, None

    def update_parameters(self, **params):
        self.params.update(params)

    @contextlib.contextmanager
    def batch(self):
        self.pending = []
        yield
        first = next(self.ids)
        for i, handle in enumerate(self.pending):
            handle.job_id = str(first) if len(self.pending) == 1 else f"{first}_{i}"
            handle.paths = SimpleNamespace(stdout=self.folder / f"{handle.job_id}_0_log.out",
                                           stderr=self.folder / f"{handle.job_id}_0_log.err")
        Recorder.calls.append({"params": dict(self.params), "jobs": [h.job for h in self.pending],
                               "ids": [h.job_id for h in self.pending]})

    def submit(self, fn, job, store_root):
        assert Path(store_root).is_absolute()
        handle = SimpleNamespace(job=job)
        self.pending.append(handle)
        return handle


@pytest.fixture
def recorder(monkeypatch):
    Recorder.calls = []
    monkeypatch.setattr(slurm_mod.submitit, "AutoExecutor", Recorder)
    monkeypatch.setattr(slurm_mod, "squeue_states", lambda: {})
    return Recorder


def test_table_goes_out_as_arrays_per_wave_and_kind_chained_by_exact_dependencies(tmp_path, recorder):
    cfg = slurm_cfg(tmp_path)
    jobs = [r.job for r in plan(cfg)]
    rep = dispatch(jobs, cfg.cluster, tmp_path / "jobs", wait=False)
    order = topological(jobs)
    assert (rep.total, rep.cached, rep.submitted, rep.attached) == (9, 0, 9, 0)
    calls = recorder.calls
    assert rep.arrays == len(calls)
    submitted = [j for c in calls for j in c["jobs"]]
    assert sorted(j.key for j in submitted) == sorted(j.key for j in order)       # each job exactly once
    id_of = {j.key: i for c in calls for j, i in zip(c["jobs"], c["ids"])}
    for c in calls:
        assert len({j.kind for j in c["jobs"]}) == 1                              # one kind per array
        kind = c["jobs"][0].kind
        assert c["params"]["name"] == f"repro-{kind}" and c["params"]["timeout_min"] >= 5
        deps = sorted({id_of[d.key] for j in c["jobs"] for d in j.deps.values()})
        extra = c["params"].get("slurm_additional_parameters", {})
        if deps:
            assert extra["dependency"] == "afterok:" + ":".join(deps) and extra["kill-on-invalid-dep"] == "yes"
        else:
            assert "dependency" not in extra
        # An array never waits on itself or on a later array.
        assert not set(deps) & set(c["ids"])
    # The two trainings are independent: one array of 2; so are the two model-based samples.
    sizes = sorted((c["jobs"][0].kind, len(c["jobs"])) for c in calls)
    assert ("train", 2) in sizes and ("sample", 2) in sizes and ("evaluate", 2) in sizes
    store = JobStore(tmp_path / "jobs")
    for job in order:   # described in the store before sbatch, with the id it got
        assert submitted_id(store.dir(job)) == id_of[job.key]
        assert json.loads((store.dir(job) / "status.json").read_text())["state"] == "submitted"


def test_rerun_submits_only_what_is_neither_done_nor_queued(tmp_path, recorder, monkeypatch):
    cfg = slurm_cfg(tmp_path)
    jobs = [r.job for r in plan(cfg)]
    order = topological(jobs)
    store = JobStore(tmp_path / "jobs")
    by_name = {j.name: j for j in order}
    features, train_adm = by_name["features/embedded"], by_name["train/adm"]
    atomic_write_json(store.prepare(features) / "result.json", {"values": {}})     # finished earlier
    atomic_write_json(store.prepare(train_adm) / "slurm.json", {"job_id": "77_0"})  # still queued
    monkeypatch.setattr(slurm_mod, "squeue_states", lambda: {"77_0": ("RUNNING", "None")})
    rep = dispatch(jobs, cfg.cluster, tmp_path / "jobs", wait=False)
    assert (rep.cached, rep.attached, rep.submitted) == (1, 1, 7)
    submitted = {j.name: c for c in recorder.calls for j in c["jobs"]}
    assert "features/embedded" not in submitted and "train/adm" not in submitted
    def after(name: str) -> set[str]:
        dep = submitted[name]["params"].get("slurm_additional_parameters", {}).get("dependency", "afterok:")
        return set(dep.removeprefix("afterok:").split(":")) - {""}

    id_of = {j.name: i for c in recorder.calls for j, i in zip(c["jobs"], c["ids"])}
    # The SDEdit- sample waits for the training still queued, by its id; nothing waits for the
    # finished feature network, and Clean-Masked sampling (no model) waits for nothing.
    assert after("sample/SDEdit-") == {"77_0", id_of["train/mt_x"]}
    assert after("evaluate/Clean-Masked") == {id_of["sample/Clean-Masked"]}
    assert after("sample/Clean-Masked") == set()

    for job in order:   # everything done: nothing at all goes out
        atomic_write_json(store.prepare(job) / "result.json", {"values": {}})
    recorder.calls.clear()
    rep = dispatch(jobs, cfg.cluster, tmp_path / "jobs", wait=False)
    assert (rep.cached, rep.submitted, recorder.calls) == (9, 0, [])
    assert "0 submitted" in rep.line()


def test_waiting_driver_reports_a_failed_job_with_its_log(tmp_path, monkeypatch):
    cfg = slurm_cfg(tmp_path)
    job = plan(cfg)[0].job.deps["samples"]
    d = JobStore(tmp_path / "jobs").prepare(job)
    atomic_write_json(d / "slurm.json", {"job_id": "5"})
    atomic_write_json(d / "status.json", {"state": "failed", "error": "ValueError: boom"})
    monkeypatch.setattr(slurm_mod, "squeue_states", lambda: {"5": ("FAILED", "None")})
    with pytest.raises(JobFailed, match=r"sample/Clean-Masked failed \(ValueError: boom\); log: .*log.txt"):
        wait_slurm([job], {job.key: "5"}, tmp_path / "jobs", poll_s=0, progress=None)


def test_waiting_driver_gives_up_on_a_job_that_left_the_queue_without_a_result(tmp_path, monkeypatch):
    cfg = slurm_cfg(tmp_path)
    job = plan(cfg)[0].job.deps["samples"]
    d = JobStore(tmp_path / "jobs").prepare(job)
    atomic_write_json(d / "slurm.json", {"job_id": "6"})
    atomic_write_json(d / "status.json", {"state": "running"})
    queue = iter([{"6": ("RUNNING", "None")}, {"6": ("COMPLETING", "None")}] + [{}] * 100)
    monkeypatch.setattr(slurm_mod, "squeue_states", lambda: next(queue))
    with pytest.raises(JobFailed, match="SLURM no longer lists it and it left no result"):
        wait_slurm([job], {job.key: "6"}, tmp_path / "jobs", poll_s=0.01, lost_after_s=0.05, progress=None)
    assert len(list(queue)) < 100     # it waited through the grace period, not forever


def test_status_lists_states_logs_and_the_tail_of_a_failed_log(tmp_path):
    cfg = slurm_cfg(tmp_path)
    jobs = [r.job for r in plan(cfg)]
    order = topological(jobs)
    store = JobStore(tmp_path / "jobs")
    done, failed, queued, running, _ = order[0], order[1], order[2], order[3], order[4]
    atomic_write_json(store.prepare(done) / "result.json", {"provenance": {"wall_time_s": 1.5}})
    d = store.prepare(failed)
    atomic_write_json(d / "status.json", {"state": "failed", "error": "RuntimeError: out of memory"})
    (d / "log.txt").write_text("".join(f"line {i}\n" for i in range(30)))
    atomic_write_json(store.prepare(queued) / "slurm.json", {"job_id": "41_0"})
    atomic_write_json(store.prepare(running) / "slurm.json", {"job_id": "41_1"})
    queue = {"41_0": ("PENDING", "Dependency"), "41_1": ("RUNNING", "None")}
    text = report(jobs, store, queue, lines=3)
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["job", "kind", "state"]
    rows = {line.split()[0]: line.split()[2] for line in lines[2:2 + len(order)]}
    assert set(rows) == {j.name for j in order}
    assert rows[done.name] == "done" and rows[failed.name] == "failed"
    assert rows[queued.name] == "pending" and rows[running.name] == "running"
    assert list(rows.values()).count("not") == len(order) - 4          # "not started"
    assert str(store.dir(failed).path.resolve() / "log.txt") in text
    assert "line 27\n  | line 28\n  | line 29" in text and "line 26" not in text   # the last 3 lines
    assert "(Dependency)" in text and str((tmp_path / "jobs" / "_submitit").resolve()) in text
