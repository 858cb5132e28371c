"""render_table / render_index on a small Table-1 result with a missing value, a tie, a
paper-only (cited) row and a row of our own whose name needs escaping."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repro.errors import UserError
from repro.report.claims import evaluate_claims
from repro.report.escape import md_escape, tex_escape
from repro.report.paper import paper_table
from repro.report.provenance import make_provenance
from repro.report.render import best_cells, render_index, render_table
from repro.report.paper import table_spec

EXPECTED_TEX = Path(__file__).parent / "data" / "report" / "table_small.tex"
OWN_ROW = "ours^x_1 (10% & #3)"
COLS = ["Mask-5", "Mask-10", "Mask-15", "Mask-20"]


def small_results() -> pd.DataFrame:
    # Mask-5: 0.0411 and 0.0409 both print as 0.041 -> a tie, both bold.
    # Mask-10: MT-Diffusion missing (NaN); SDEdit- is not in our results at all.
    return pd.DataFrame(
        {
            "Clean-Masked": [0.3204, 0.4187, 0.4655, 0.4972],
            "MT-Diffusion": [0.0411, np.nan, 0.1012, 0.1404],
            OWN_ROW: [0.0409, 0.0903, 0.1201, 0.1498],
        },
        index=COLS,
    ).T


def small_provenance() -> dict:
    return make_provenance(
        profile="tiny", dataset="embedded-16", n_samples=32, feature_extractor="embedded-features-v1",
        config_key="3f2a9c1d", wall_time_s=12.5, git_commit="abc1234",
        rows={OWN_ROW: {"n_samples": 16, "config_key": "77e0b2aa"}},
    )


@pytest.fixture
def rendered(tmp_path):
    paths = render_table(1, small_results(), small_provenance(), tmp_path,
                         caption_notes=["Tiny profile: a smoke test of the pipeline, not a reproduction."],
                         cited_rows=["SDEdit-"])
    return tmp_path, paths


def test_writes_exactly_four_files_atomically(rendered):
    out, paths = rendered
    assert set(paths) == {"md", "tex", "csv", "json"}
    assert sorted(p.name for p in out.iterdir()) == ["table1.csv", "table1.json", "table1.md", "table1.tex"]


def test_nothing_is_written_when_rendering_fails(tmp_path):
    bad = make_provenance(profile="tiny", dataset="d", n_samples=None, feature_extractor="f", git_commit="x")
    with pytest.raises(ValueError, match="n_samples"):
        render_table(1, small_results(), bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tex_matches_the_reviewed_file(rendered):
    out, paths = rendered
    assert paths["tex"].read_text() == EXPECTED_TEX.read_text()


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_tex_compiles_with_booktabs_only(rendered):
    out, paths = rendered
    doc = out / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                   f"\\input{{{paths['tex'].name}}}\n\\end{{document}}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                         cwd=out, capture_output=True, text=True, timeout=120)
    log = (out / "doc.log").read_text(errors="replace")
    assert run.returncode == 0, log[-3000:]
    assert "Missing character" not in log and "Overfull" not in log


def test_markdown(rendered):
    md = rendered[1]["md"].read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert "Mask-5 ↓" in header
    # paper order, then our own row; the cited paper-only row is marked
    assert [r.split("|")[1].strip() for r in rows] == [
        "Clean-Masked", "SDEdit-†", "MT-Diffusion", md_escape(OWN_ROW)]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in rows}
    assert cells["MT-Diffusion"][:2] == ["**0.041** (0.035)", "- (0.068)"]  # tie bold, NaN as "-"
    assert cells[md_escape(OWN_ROW)][:2] == ["**0.041** (-)", "**0.090** (-)"]
    assert cells["SDEdit-†"][0] == "- (0.400)"
    assert cells["Clean-Masked"][0] == "0.320 (0.311)"
    assert "† cited, not reproduced here." in md
    assert "samples 32 / 16 (per row)" in md and "commit abc1234" in md and "Tiny profile" in md
    assert "- **not evaluable**: MT-Diffusion < SDEdit- for every mask count." in md


def test_best_cells_ties_at_printed_precision_and_direction():
    spec = table_spec("table1")
    best = best_cells(spec, small_results())
    assert {(r, c) for r, c in best if c == "Mask-5"} == {("MT-Diffusion", "Mask-5"), (OWN_ROW, "Mask-5")}
    assert (OWN_ROW, "Mask-10") in best and ("MT-Diffusion", "Mask-15") in best
    # higher-is-better column (Table 2, IS) picks the maximum
    t2 = paper_table(2)
    assert ("MT-Diffusion-X", "IS") in best_cells(table_spec("table2"), t2)
    # rows the paper calls not comparable never win (Table 3 restoration rows have the best FID)
    t3_best = best_cells(table_spec("table3"), paper_table(3))
    assert ("MT-Diffusion^f_g", "FID") in t3_best
    assert not any("restoration" in r for r, _ in t3_best)


def test_csv_is_tidy(rendered):
    frame = pd.read_csv(rendered[1]["csv"])
    assert list(frame.columns) == ["row", "column", "ours", "low", "high", "paper", "direction", "reference"]
    assert len(frame) == 4 * 4
    assert set(frame["direction"]) == {"lower_better"}
    indexed = frame.set_index(["row", "column"])
    assert np.isnan(indexed.at[("SDEdit-", "Mask-5"), "ours"]) and indexed.at[("SDEdit-", "Mask-5"), "paper"] == 0.4
    assert np.isnan(indexed.at[(OWN_ROW, "Mask-20"), "paper"])
    assert indexed.at[("MT-Diffusion", "Mask-20"), "ours"] == 0.1404


def test_json_round_trips_with_provenance_and_claims(rendered):
    doc = json.loads(rendered[1]["json"].read_text())
    assert doc["table"] == "table1" and doc["columns"] == COLS
    ours, paper = small_results(), paper_table(1)
    for row in doc["rows"]:
        for col, cell in row["cells"].items():
            expect_ours = ours.at[row["row"], col] if row["row"] in ours.index else np.nan
            expect_paper = paper.at[row["row"], col] if row["row"] in paper.index else np.nan
            assert (cell["ours"] is None) == bool(np.isnan(expect_ours))
            assert (cell["paper"] is None) == bool(np.isnan(expect_paper))
            assert cell["ours"] is None or cell["ours"] == expect_ours  # exact, not rounded
            assert cell["paper"] is None or cell["paper"] == expect_paper
    by_row = {r["row"]: r for r in doc["rows"]}
    assert by_row["SDEdit-"]["provenance"] is None and by_row["SDEdit-"]["cited"]
    assert by_row[OWN_ROW]["provenance"]["n_samples"] == 16 and not by_row[OWN_ROW]["in_paper"]
    assert by_row["MT-Diffusion"]["provenance"] == {
        "profile": "tiny", "dataset": "embedded-16", "n_samples": 32, "config_key": "3f2a9c1d",
        "git_commit": "abc1234", "wall_time_s": 12.5, "feature_extractor": "embedded-features-v1"}
    assert doc["provenance"]["git_commit"] == "abc1234"
    assert doc["claims"] == evaluate_claims(1, ours)


def test_index_page(rendered):
    out, _ = rendered
    page = render_index(out, [1, 4]).read_text()
    assert page == (out / "README.md").read_text()
    summary = next(line for line in page.splitlines() if line.startswith("| [Table 1]"))
    assert [c.strip() for c in summary.split("|")[3:7]] == ["0", "0", "0", "4"]  # held, not held, inconclusive, not evaluable
    assert "[tex](table1.tex)" in summary
    assert "not rendered yet" in page and "## Table 1: LPIPS score" in page
    assert "Total: 0 held, 0 not held, 0 inconclusive, 4 not evaluable." in page


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.assign(FID=1.0), "not columns of the table"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "duplicated"),
        (lambda f: f.astype(object).where(f.notna(), "n/a"), "must be numbers"),
    ],
)
def test_bad_results_are_user_errors(tmp_path, mutate, message):
    with pytest.raises(UserError, match=message):
        render_table(1, mutate(small_results()), small_provenance(), tmp_path)
    with pytest.raises(UserError, match="cited rows"):
        render_table(1, small_results(), small_provenance(), tmp_path, cited_rows=["pix2pix"])
    with pytest.raises(UserError, match="unknown table"):
        render_table(7, small_results(), small_provenance(), tmp_path)


def test_escaping():
    assert tex_escape("MT-Diffusion^f_g 10% a&b #1 $x ~{y}\\ <= < >") == (
        r"MT-Diffusion\textasciicircum{}f\_g 10\% a\&b \#1 \$x \textasciitilde{}\{y\}\textbackslash{} "
        r"$\le$ $<$ $>$")
    assert tex_escape("ADM*_g SDEdit-") == r"ADM*\_g SDEdit-"
    assert md_escape("ADM*_g | x") == r"ADM\*\_g \| x"


def test_report_includes_every_figure_but_itself(tmp_path):
    """report.tex \\includegraphics Figure 6, the grids and the curves, never report.pdf (which
    `make report` writes beside them)."""
    from repro.report.__main__ import write_report_tex

    for name in ("figure6.pdf", "report.pdf", "figures/table1_restorations.pdf", "curves/table1_loss.pdf"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"%PDF")
    tex = write_report_tex(tmp_path, ["table1"]).read_text()
    included = [line.split("{")[-1].rstrip("}") for line in tex.splitlines() if "includegraphics" in line]
    assert included == ["figure6.pdf", "figures/table1_restorations.pdf", "curves/table1_loss.pdf"]


def test_index_lists_figures_with_claims(rendered):
    """Figure 6's claims are counted in the summary and its section shows the plot."""
    out, _ = rendered
    claims = [{"text": "a", "status": "held", "detail": ""}, {"text": "b", "status": "not held", "detail": ""}]
    (out / "figure6.json").write_text(json.dumps({"claims": claims}))
    (out / "figure6.md").write_text("## Figure 6: classification accuracy\n\nbody\n")
    page = render_index(out, [1], figures=[("Figure 6", "figure6", "Accuracy vs iterations")]).read_text()
    row = next(line for line in page.splitlines() if line.startswith("| [Figure 6]"))
    assert "(#figure-6-classification-accuracy)" in row
    assert [c.strip() for c in row.split("|")[3:6]] == ["1", "1", "0"]
    assert "![Figure 6](figure6.png)" in page
    assert "Total: 1 held, 1 not held, 0 inconclusive, 4 not evaluable." in page
    absent = render_index(out, [1], figures=[("Figure 7", "figure7", "not rendered")]).read_text()
    assert "Figure 7" not in absent
