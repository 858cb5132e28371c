"""python -m repro.steps: quality against sampling steps, and the choice of the fewest steps."""
from __future__ import annotations

import pandas as pd
import pytest

from repro.errors import UserError
from repro.steps import cli, fewest_steps, parse_steps, write


def _frame() -> pd.DataFrame:
    # hand-made curves: FID 20, 10.4, 10.1, 10.0 -> within 5% of 10.0 from 25 steps on (10.4 <= 10.5)
    rows = [("2", "ancestral", n, "X", "FID", v) for n, v in ((10, 20.0), (25, 10.4), (50, 10.1), (1000, 10.0))]
    rows += [("1", "ancestral", n, "MT", "LPIPS", v) for n, v in ((10, 0.30), (25, 0.27), (1000, 0.25))]
    return pd.DataFrame(rows, columns=["table", "sampler", "sampling_steps", "row", "metric", "value"])


def test_fewest_steps_within_five_percent_by_hand():
    best = fewest_steps(_frame()).set_index("table")
    assert best.loc["2", "steps"] == 25 and best.loc["2", "speedup"] == pytest.approx(40.0)
    # LPIPS 0.27 is 8% above 0.25: not within 5%, so only the 1000-step point qualifies
    assert best.loc["1", "steps"] == 1000 and best.loc["1", "speedup"] == 1.0


def test_writes_csv_and_plots(tmp_path):
    path = write(_frame(), tmp_path, "tiny")
    assert pd.read_csv(path, dtype={"table": str}).equals(_frame())
    assert path.with_suffix(".png").stat().st_size > 0 and path.with_suffix(".pdf").stat().st_size > 0


def test_bad_steps_are_user_errors():
    assert parse_steps("50,10,10") == (10, 50)
    for bad in ("ten", "0,5", ""):
        with pytest.raises(UserError):
            parse_steps(bad)


@pytest.mark.slow
def test_tiny_profile_table1_end_to_end(tmp_path, capsys):
    rc = cli(["--profile", "tiny", "--only", "1", "--steps", "2,3", "--store", str(tmp_path / "jobs"),
              "--out", str(tmp_path / "tables")])
    assert rc == 0
    frame = pd.read_csv(tmp_path / "tables" / "curves" / "steps.csv")
    assert sorted(frame.sampling_steps.unique()) == [2, 3] and set(frame.metric) == {"LPIPS"}
    assert frame.value.notna().all() and (frame.value >= 0).all()
    assert (tmp_path / "tables" / "curves" / "steps.png").exists()
    assert not (tmp_path / "tables" / "table1.md").exists()      # each point's table went to a scratch folder
