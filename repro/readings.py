"""The readings study (issue 11): `python -m repro.table readings [--profile P] [key=value ...]`.

benchmarks/readings.yaml names readings of the paper (each a set of hydra overrides), seeds and
the rows of Tables 1 and 2 to recompute. Every (reading, seed, table) is composed, checked and
planned like the table itself; all their jobs go to the dispatcher at once, so a job shared by
several readings (a baseline whose key holds none of what they change) runs once. The cells are
collected from the store and repro.report.readings writes tables/readings.{md,tex,csv,json}.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from repro.cli import available_clusters
from repro.config import compose, to_dict
from repro.errors import UserError

READINGS_SPEC = "readings"   # benchmarks/readings.yaml; `python -m repro.table readings`


def load_study(path: Path | None = None):
    """(study block, readings, {table: rows}) of benchmarks/readings.yaml; UserError if malformed."""
    from repro.report.paper import BENCHMARKS
    from repro.report.readings import Reading

    doc = to_dict(OmegaConf.load(path or BENCHMARKS / f"{READINGS_SPEC}.yaml"))
    study = doc.get("study") or {}
    readings, rows, seeds = study.get("readings"), study.get("tables"), study.get("seeds")
    if not readings or not rows or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError("benchmarks/readings.yaml: study needs readings (a list of {name, overrides}), "
                        "tables ({table: [rows]}) and seeds (a list of integers)")
    names = [r.get("name") for r in readings]
    if None in names or len(set(names)) != len(names):
        raise UserError(f"benchmarks/readings.yaml: every reading needs a unique name, got {names}")
    tables = {str(t): list(r) for t, r in rows.items()}
    for r in readings:   # `tables:` restricts a reading to some of the study's tables
        unknown = [str(t) for t in r.get("tables") or () if str(t) not in tables]
        if unknown:
            raise UserError(f"benchmarks/readings.yaml: reading {r['name']!r} names tables {unknown} that the "
                            f"study does not recompute ({', '.join(tables)})")
        extra = [s for s in r.get("seeds") or () if s not in seeds]
        if extra:
            raise UserError(f"benchmarks/readings.yaml: reading {r['name']!r} asks for seeds {extra} outside the "
                            f"study's seeds {seeds}")
    return study, [Reading(r["name"], tuple(r.get("overrides") or ()), r.get("why", ""),
                           only=tuple(str(t) for t in r.get("tables") or ()),
                           seeds=tuple(r.get("seeds") or seeds)) for r in readings], tables


def _applies(default: DictConfig, overrides: tuple[str, ...]) -> bool:
    """Whether every key a reading overrides exists in a table's config (eval.composite is Table 1's)."""
    missing = object()
    return all(OmegaConf.select(default, o.split("=", 1)[0], default=missing) is not missing for o in overrides)


def collect_cells(planned: list[tuple[str, int, str, str, object]], js) -> tuple[list[dict], dict]:
    """From the evaluate jobs of (reading, seed, table, row, job): each cell's value with its 95%
    interval (the job's result, as the tables read it) and, per (table, reading, seed), the cells'
    per-image data or replicates for the claim tests (`read_cells`, the tables' reader); None for
    a (table, reading, seed) any of whose jobs predates them (judged on point values then)."""
    from repro.jobs.evaluate import read_cells

    records, data = [], {}
    for name, seed, table, row, job in planned:
        res = js.dir(job).result()
        intervals = res.get("intervals") or {}
        for col, value in res["values"].items():
            low, high = intervals.get(col) or (None, None)
            records.append({"table": table, "reading": name, "seed": seed, "row": row, "column": col,
                            "value": value, "low": low, "high": high})
        group = (table, name, seed)
        if "intervals" not in res:
            data[group] = None
        elif data.get(group, {}) is not None:
            data.setdefault(group, {}).update({(row, col): cell for col, cell in read_cells(js.dir(job)).items()})
    return records, data


class ReadingsPlan(NamedTuple):
    """Every (reading, seed, table, row, job) of the study, before anything runs."""

    study: dict
    readings: list                                     # repro.report.readings.Reading, `tables` filled in
    rows: dict[str, list[str]]                         # table -> the rows recomputed
    planned: list[tuple[str, int, str, str, object]]   # reading, seed, table, row, its evaluate job
    used: dict[str, dict]                              # reading -> the paper readings its configs use
    cfg: DictConfig                                    # the last table's default config (cluster, resources)


def plan_readings(profile: str, cluster: str, overrides: tuple[str, ...], spec_path: Path | None = None,
                  check: Callable[[DictConfig], None] | None = None) -> ReadingsPlan:
    """Compose, check and plan every (reading, seed, table) of the study; runs nothing. `check`
    validates each composed config (repro.table.validate, the tables' own checks)."""
    from repro.plan import plan, readings as readings_of

    if cluster not in available_clusters():
        raise UserError(f"unknown cluster {cluster!r}: choose one of {', '.join(available_clusters())}")
    study, readings, rows = load_study(spec_path)
    planned: list[tuple[str, int, str, str, object]] = []   # reading, seed, table, row, job
    used: dict[str, dict] = {}
    for table, table_rows in rows.items():
        default = compose(table, profile, cluster, overrides)
        for i, r in enumerate(readings):
            if (r.only and table not in r.only) or not _applies(default, r.overrides):
                continue
            readings[i] = r = dataclasses.replace(r, tables=(*r.tables, table))
            for seed in r.seeds:
                cfg = compose(table, profile, cluster, (*overrides, *r.overrides, f"seed={seed}"))
                if check is not None:
                    check(cfg)
                used.setdefault(r.name, {}).update(readings_of(cfg))
                by_name = {p.name: p.job for p in plan(cfg)}
                absent = [x for x in table_rows if x not in by_name]
                if absent:
                    raise UserError(f"benchmarks/readings.yaml: table {table} has no rows {absent}; "
                                    f"its rows are {', '.join(by_name)}")
                planned += [(r.name, seed, table, x, by_name[x]) for x in table_rows]
    return ReadingsPlan(study, readings, rows, planned, used, default)


def run_readings(profile: str, cluster: str, overrides: tuple[str, ...], store: Path, out_dir: Path,
                 spec_path: Path | None = None, check: Callable[[DictConfig], None] | None = None
                 ) -> dict[str, Path]:
    """The readings study: every (reading, seed, table) planned (`plan_readings`), all jobs
    dispatched at once (a job shared by several readings, e.g. a baseline that does not read what
    they change, runs once), the cells collected and tables/readings.{md,tex,csv,json} written."""
    from repro.dispatch import dispatch
    from repro.io import atomic_write_text
    from repro.jobs.job import topological
    from repro.jobs.store import JobStore
    from repro.report.provenance import git_commit
    from repro.report.readings import render_study

    study, readings, rows, planned, used, default = plan_readings(profile, cluster, overrides, spec_path, check)
    jobs = [job for *_, job in planned]
    report = dispatch(jobs, default.cluster, store)
    print(report.line())
    js = JobStore(store)
    records, data = collect_cells(planned, js)
    unique = topological(jobs)
    provenance = {"profile": profile, "seeds": list(study["seeds"]), "git_commit": git_commit(),
                  "jobs": len(unique), "overrides": list(overrides),
                  "wall_time_s": round(sum(js.dir(j).result()["provenance"]["wall_time_s"] for j in unique), 1),
                  "readings": used}
    texts = render_study(pd.DataFrame.from_records(records), readings, rows, provenance, study.get("title", ""),
                         data)
    key = study.get("key", READINGS_SPEC)
    return {ext: atomic_write_text(Path(out_dir) / f"{key}.{ext}", text) for ext, text in texts.items()}
