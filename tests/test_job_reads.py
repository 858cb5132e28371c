"""A job's key hashes exactly the configuration its body reads.

The bodies declare what they read (`reads(view)` beside the body); the plan keeps only that
(repro.jobs.job.select). Here every job of a tiny table runs its body on its config wrapped
in a mapping that records every key it looks up (present or not), and the record must equal
the declaration: nothing read that the key leaves out (a setting that would silently not
recompute), nothing in the key that is never read (a setting that would needlessly recompute).
"""
from __future__ import annotations

from collections.abc import Mapping

import pytest

from repro.config import compose
from repro.io import atomic_write_json
from repro.jobs.job import Job, select, topological
from repro.jobs.runner import body, declared_reads
from repro.jobs.store import JobStore
from repro.plan import features_job, plan, train_job


class Recorded(Mapping):
    """A read-only view of a nested config that adds the dotted path of every lookup to `reads`."""

    def __init__(self, data: Mapping, reads: set[str], prefix: str = ""):
        self._data, self._reads, self._prefix = data, reads, prefix

    def _path(self, key: str) -> str:
        return f"{self._prefix}{key}"

    def __getitem__(self, key):
        self._reads.add(self._path(key))
        value = self._data[key]
        return Recorded(value, self._reads, f"{self._path(key)}.") if isinstance(value, Mapping) else value

    def __contains__(self, key) -> bool:
        self._reads.add(self._path(key))
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __reduce__(self):   # torch.save of the config: stored as a plain dict, not a read
        return dict, (dict(self._data),)


def leaves(config: Mapping, prefix: str = "") -> set[str]:
    out = set()
    for k, v in config.items():
        out |= leaves(v, f"{prefix}{k}.") if isinstance(v, Mapping) and v else {f"{prefix}{k}"}
    return out


def covered(path: str, declared: set[str]) -> bool:
    return any(path == d or path.startswith(d + ".") for d in declared)


def on_the_way(path: str, declared: set[str]) -> bool:
    """A block looked up to reach a declared setting inside it ("data" for "data.name")."""
    return any(d.startswith(path + ".") for d in declared)


def test_recorder_records_nested_and_absent_lookups():
    reads: set[str] = set()
    cfg = Recorded({"a": {"b": 1, "c": 2}, "d": 3}, reads)
    assert cfg["a"]["b"] == 1 and cfg["a"].get("zz", 5) == 5 and dict(cfg["a"]) == {"b": 1, "c": 2}
    assert reads == {"a", "a.b", "a.c", "a.zz"}


def test_select_keeps_exactly_the_paths():
    view = {"data": {"name": "x", "n_test": 3}, "unet": {"c": 1}, "train": {"steps": 2}}
    assert select(view, ["data.name", "unet", "train.lr", "nope.deeper"]) == {"data": {"name": "x"}, "unet": {"c": 1}}


def _run_recorded(job: Job, store: JobStore) -> set[str]:
    """Run `job`'s body on a recording config into its store folder; return what it looked up.
    (Its result is stored as the runner would, so that the jobs after it can read it.)"""
    out = store.prepare(job)
    reads: set[str] = set()
    result = body(job.kind)(Recorded(job.config, reads), out, {r: store.dir(d) for r, d in job.deps.items()})
    atomic_write_json(out / "result.json", {**result, "provenance": {"wall_time_s": 0.0}})
    return reads


@pytest.mark.parametrize("table", ["1", "3", "4", "night2day", "representation", "diffusionmtl"])
def test_every_body_reads_exactly_what_its_key_hashes(table, tmp_path, monkeypatch):
    """Bodies that declare what they read: read == hashed. The others still hash the plan's whole
    view of them (so they read nothing their key leaves out); they run for the jobs after them."""
    monkeypatch.chdir(tmp_path)   # tiny data and stores are relative to the working directory
    overrides = ["train.steps=2", *(["classifier_train.steps=2"] if table == "3" else [])]
    store = JobStore(tmp_path / "jobs")
    for job in topological([r.job for r in plan(compose(table, "tiny", overrides=overrides))]):
        reads = _run_recorded(job, store)
        declared = declared_reads(job.kind, job.config)
        if declared is None:
            continue
        hashed = leaves(job.config)
        declared = set(declared)
        assert {p for p in reads if not (covered(p, declared) or on_the_way(p, declared))} == set(), \
            f"{job.name} reads undeclared settings"
        assert {p for p in hashed if not covered(p, reads)} == set(), f"{job.name} hashes unread settings"


def _key(table: str, model: str, *overrides: str) -> str:
    cfg = compose(table, "tiny", overrides=list(overrides))
    return train_job(cfg, model, features_job(cfg)).key


def test_adm_training_key_ignores_settings_it_does_not_read():
    base = _key("1", "adm")
    for ov in ("diffusion.weights=constant", "diffusion.weight_value=2.0", "diffusion.lam=0.5",
               "diffusion.prior=shifted", "data.n_test=16", "eval.n_images=4", "eval.batch_size=4",
               "sample.steps=2", "features.steps=3", "eval.composite=true"):
        assert _key("1", "adm", ov) == base, ov
    for ov in ("train.steps=5", "unet.model_channels=16", "task.patch_fraction=0.5", "data.n_train=128", "seed=1"):
        assert _key("1", "adm", ov) != base, ov
    # The multi-task model reads the aggregation weights and lambda; its key follows them.
    mt = _key("1", "mt_x")
    for ov in ("diffusion.weights=constant", "diffusion.lam=0.5"):
        assert _key("1", "mt_x", ov) != mt, ov
    assert _key("1", "mt_x", "diffusion.prior=shifted") == mt   # the prior is a sampling setting


def test_diagnose_jobs_read_exactly_what_their_key_hashes(tmp_path, monkeypatch):
    """The diagnose jobs (repro.plan.diagnose_plan) of Table 1: one per trained model, the train
    keys untouched, and the body's reads equal to its declaration."""
    from repro.plan import diagnose_plan

    monkeypatch.chdir(tmp_path)
    cfg = compose("1", "tiny", overrides=["train.steps=2"])
    rows = [r.job for r in plan(cfg)]
    diag = diagnose_plan(cfg, rows)
    assert sorted(j.name for j in diag) == ["diagnose/adm", "diagnose/mt_x"]
    assert {j.deps["model"].key for j in diag} == {j.key for j in topological(rows) if j.kind == "train"}
    store = JobStore(tmp_path / "jobs")
    for job in topological(diag):
        reads = _run_recorded(job, store)
        declared = declared_reads(job.kind, job.config)
        if job.kind != "diagnose":
            continue
        declared = set(declared)
        assert {p for p in reads if not (covered(p, declared) or on_the_way(p, declared))} == set()
        assert {p for p in leaves(job.config) if not covered(p, reads)} == set()
        result = store.dir(job).result()
        assert len(result["loss_by_t"]) == 10
