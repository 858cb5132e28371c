"""Store damage on a tiny job chain (features, train, sample, evaluate of Table 1's MT-Diffusion
row): each kind of damage is detected, only what it touches is recomputed (resuming from the
last good checkpoint where there is one), and the results come out bit for bit as before.

The dependency rule (repro/jobs/store.py): a job stays done while the outputs of the jobs it
read are byte-identical to what it read; a recomputation that reproduces them (CPU, fixed
seeds) leaves dependents alone, one that changes a byte recomputes them.
"""
from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

import repro.io
import repro.jobs.harness as harness
from repro.config import compose
from repro.io import atomic_save_torch, sha256_file
from repro.jobs.job import Job, topological
from repro.jobs.runner import Preempted, run_job
from repro.jobs.store import JobStore
from repro.plan import plan

pytestmark = pytest.mark.slow
KINDS = ("features", "train", "sample", "evaluate")


def chain(data_root: Path) -> dict[str, Job]:
    cfg = compose("1", "tiny", "local", [f"data.root={data_root}", "train.steps=8", "train.log_every=1"])
    row = next(r for r in plan(cfg) if r.name == "MT-Diffusion")
    return {j.kind: j for j in topological([row.job])}


def runs(store: Path, job: Job) -> int:
    """How many times the job's body started (its log's header lines)."""
    log = store / job.key / "log.txt"
    return log.read_text().count(f"== {job.name} [{job.key}] ==") if log.exists() else 0


def run_all(store: Path, jobs: dict[str, Job]) -> set[str]:
    """Run the chain as dispatch does; the kinds whose body ran."""
    before = {k: runs(store, j) for k, j in jobs.items()}
    for job in topological(list(jobs.values())):
        run_job(job, store)
    return {k for k, j in jobs.items() if runs(store, j) > before[k]}


def outputs(store: Path, jobs: dict[str, Job]) -> dict[str, object]:
    """Every result (without provenance) and the sha256 of every output file."""
    out = {}
    for kind, job in jobs.items():
        d = store / job.key
        out[kind] = {k: v for k, v in json.loads((d / "result.json").read_text()).items() if k != "provenance"}
        for p in sorted(d.rglob("*")):
            if (p.is_file() and p.suffix in (".pt", ".npz", ".png") and p.name != "checkpoint.pt"
                    and not p.relative_to(d).as_posix().startswith("checkpoint_batches/")):   # resume state
                out[f"{kind}/{p.relative_to(d)}"] = sha256_file(p)
    out["features"].pop("train_time_s")   # a wall time: differs between runs by nature
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    jobs = chain(root / "data")
    assert run_all(root / "jobs", jobs) == set(KINDS)
    return root, jobs, outputs(root / "jobs", jobs)


@pytest.fixture
def case(reference, tmp_path):
    root, jobs, ref = reference
    store = tmp_path / "jobs"
    shutil.copytree(root / "jobs", store)
    return store, jobs, ref


def truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def garble(p: Path) -> None:
    p.write_text('{"state": "done", "values": {')


def flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))


def delete(p: Path) -> None:
    p.unlink()


def damaging(fn):
    """Damage happens between runs, i.e. between processes: forget this process's file digests
    (repro.io keeps them per file version, and a bit flip within the same clock tick as the
    write, in place, leaves the version stamp unchanged)."""
    def damage(p: Path) -> None:
        fn(p)
        repro.io._digests.clear()
    return damage


truncate, garble, flip, delete = (damaging(f) for f in (truncate, garble, flip, delete))
DAMAGE = {"truncate": truncate, "garble": garble, "flip": flip, "delete": delete}

# (job, file, damage) -> the kinds whose body runs again
CASES = [
    ("train", "result.json", "truncate", {"train"}),
    ("sample", "result.json", "garble", {"sample"}),
    ("evaluate", "result.json", "delete", {"evaluate"}),
    ("evaluate", "status.json", "garble", set()),
    ("train", "status.json", "truncate", set()),
    ("train", "job.json", "truncate", set()),
    ("sample", "job.json", "garble", set()),
    ("train", "checkpoint.pt", "truncate", set()),      # resume state of a finished job: discarded
    ("train", "checkpoint.pt", "flip", set()),
    ("train", "model.pt", "flip", {"train"}),            # resumes from the checkpoint, same bytes
    ("train", "model.pt", "delete", {"train"}),
    ("train", "snapshots/ema_0000003.pt", "flip", {"train"}),   # written before the checkpoint: from scratch
    ("train", "manifest.json", "garble", {"train"}),
    ("sample", "samples.npz", "truncate", {"sample"}),
    ("sample", "samples.npz", "delete", {"sample"}),
    ("sample", "grid_m15.png", "flip", {"sample"}),
    ("features", "feature_net.pt", "flip", {"features", "evaluate"}),   # its result holds a wall time
    # per-batch resume state (repro.jobs.batches) of finished jobs: discarded, the jobs stay done
    ("sample", "checkpoint_batches/restored-m10-00000.npz", "flip", set()),
    ("evaluate", "checkpoint_batches/lpips-m5-00000.npz", "truncate", set()),
]


@pytest.mark.parametrize("kind, name, damage, rerun", CASES, ids=[f"{k}-{n}-{d}" for k, n, d, _ in CASES])
def test_damage_is_detected_and_repaired(case, kind, name, damage, rerun):
    store, jobs, ref = case
    d = JobStore(store).dir(jobs[kind])
    DAMAGE[damage](d / name)
    status = d.status()                                  # never raises
    if name == "status.json":
        assert d.done and status["state"] == "done"
    else:
        assert not d.done and status["state"] == "damaged" and status["damage"]
    assert run_all(store, jobs) == rerun
    assert all(JobStore(store).dir(j).done for j in jobs.values())
    assert outputs(store, jobs) == ref
    if name == "job.json":
        assert json.loads((d / name).read_text())["key"] == jobs[kind].key
    if (kind, name) == ("train", "model.pt"):
        assert "resuming from step 6" in (d / "log.txt").read_text()
    if name.startswith("snapshots/"):
        assert (d / "log.txt").read_text().count("resuming from step") == 0
    if name == "checkpoint.pt":
        assert not (d / name).exists() and "discarded (resume state of a finished job)" in (d / "log.txt").read_text()


def test_changed_input_recomputes_everything_downstream(case):
    """A dependency's outputs rewritten with other bytes (as a recomputation on another device
    would give): the jobs that read it are no longer done and recompute."""
    store, jobs, ref = case
    train = JobStore(store).dir(jobs["train"])
    state = torch.load(train / "model.pt", weights_only=True)
    state["ema"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["ema"].items()}
    atomic_save_torch(train / "model.pt", state)
    assert train.done and not JobStore(store).dir(jobs["sample"]).done
    assert not JobStore(store).dir(jobs["evaluate"]).done
    assert run_all(store, jobs) == {"sample", "evaluate"}
    assert "inputs changed" in (store / jobs["sample"].key / "log.txt").read_text()
    assert outputs(store, jobs)["evaluate"] != ref["evaluate"]


def test_unfinished_job_resumes_from_a_good_checkpoint_and_restarts_after_a_damaged_one(reference, tmp_path,
                                                                                       monkeypatch):
    root, jobs, ref = reference
    calls = []

    def stop_after_5():
        calls.append(1)
        return signal.SIGTERM if len(calls) >= 5 else None

    for label, damage in (("good", None), ("flipped", flip)):
        store = tmp_path / label
        shutil.copytree(root / "jobs" / jobs["features"].key, store / jobs["features"].key)
        calls.clear()
        monkeypatch.setattr(harness, "stop_requested", stop_after_5)
        with pytest.raises(Preempted):
            run_job(jobs["train"], store)
        monkeypatch.undo()
        d = JobStore(store).dir(jobs["train"])
        (d / ".model.pt.killed.tmp").write_bytes(b"half a model")      # a writer killed mid-way
        if damage:
            damage(d / "checkpoint.pt")
        run_all(store, jobs)
        log = (d / "log.txt").read_text()
        assert ("resuming from step 5" in log) == (damage is None)
        assert not list(d.path.rglob("*.tmp"))
        assert outputs(store, jobs) == ref


def test_half_written_samples_of_an_unfinished_job_are_never_taken_as_finished(case):
    """A samples file cut short by a writer that bypassed the atomic writers (or a disk that lost
    its tail), in a job killed before its result: recomputed, not kept as 'finished before a
    preemption' (repro/tasks/masked_image.py keeps the per-mask files it finds)."""
    store, jobs, ref = case
    d = JobStore(store).dir(jobs["sample"])
    (d / "result.json").unlink()
    truncate(d / "samples.npz")
    assert not d.done and d.status()["state"] == "damaged"
    assert run_all(store, jobs) == {"sample"}
    assert "samples.npz: damaged" in (d / "log.txt").read_text()
    assert outputs(store, jobs) == ref


def test_a_folder_without_manifest_is_recomputed_and_foreign_files_removed(case):
    """Folders written before checksums were kept cannot be verified: recomputed from scratch."""
    store, jobs, ref = case
    d = JobStore(store).dir(jobs["sample"])
    (d / "manifest.json").unlink()
    (d / "notes.txt").write_text("not written through repro.io")
    assert not d.done
    assert run_all(store, jobs) == {"sample"}
    assert not (d / "notes.txt").exists()
    assert outputs(store, jobs) == ref


def test_status_reports_damage_and_never_crashes(case):
    from repro.status import job_state

    store, jobs, _ = case
    js = JobStore(store)
    flip(js.dir(jobs["train"]) / "model.pt")
    garble(js.dir(jobs["sample"]) / "status.json")
    garble(js.dir(jobs["evaluate"]) / "job.json")
    states = {kind: job_state(job, js, None) for kind, job in jobs.items()}
    assert states["features"].state == "done"
    assert states["train"].state == "damaged" and "model.pt: damaged" in states["train"].detail
    assert states["sample"].state == "damaged" and "input model" in states["sample"].detail
    assert states["evaluate"].state == "damaged" and "job.json" in states["evaluate"].detail


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_fidelity_cache_entry_is_recomputed(reference, tmp_path, damage):
    """The reference statistics cached under jobs/_cache/fidelity/ (outside any job folder)."""
    import numpy as np

    from repro.metrics import compute_generation_metrics, featurenet_extractor

    root, jobs, _ = reference
    arr = np.load(root / "jobs" / jobs["sample"].key / "samples.npz")
    ext = featurenet_extractor(root / "jobs" / jobs["features"].key / "feature_net.pt", cuda=False)
    cache = tmp_path / "_cache" / "fidelity"
    first = compute_generation_metrics(arr["restored_m5"], arr["original"], ext, cache, isc_splits=2)
    (entry,) = cache.iterdir()
    DAMAGE[damage](entry)
    again = compute_generation_metrics(arr["restored_m5"], arr["original"], ext, cache, isc_splits=2)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    assert compute_generation_metrics(arr["restored_m5"], arr["original"], ext, cache, isc_splits=2) == again
