"""python -m repro.figure 6 [--profile tiny|smoke|paper] [--cluster ...] [key=value ...]

Figure 6 of MT-Diffusion (Section 4.2): top-1 and top-5 accuracy of MT-Diffusion-E's
classifier and of ADM's noisy classifier against supervised finetuning iterations. Its
setting is Table 2's (the E model is Table 2's job), so the spec is the `figure6:` block of
benchmarks/table2.yaml. Writes tables/figure6.{png,pdf,csv,json,md}; the paper's claim about
the curves is marked held / not held from them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from repro.cli import profile_out, run, table_options
from repro.errors import UserError
from repro.jobs.job import Job

FIGURES = {"6": "2"}   # figure -> the table whose spec holds its block


def figure6_jobs(cfg: DictConfig) -> dict[str, Job]:
    """Series label -> classifier job (the finetuning run whose accuracy curve it plots)."""
    from repro.plan import classifier_job, features_job

    with open_dict(cfg):
        cfg.classifiers = OmegaConf.merge(cfg.get("classifiers") or {}, cfg.figure6.classifiers)
    feats = features_job(cfg)
    return {label: classifier_job(cfg, name, feats) for label, name in cfg.figure6.series.items()}


def curves_frame(results: dict[str, dict]) -> pd.DataFrame:
    """Long format: series, iteration, top1, top5."""
    rows = [{"series": label, "iteration": p["step"], "top1": p["top1"], "top5": p["top5"]}
            for label, res in results.items() for p in res["curve"]]
    return pd.DataFrame(rows, columns=["series", "iteration", "top1", "top5"])


def plot(frame: pd.DataFrame, path: Path, caption: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repro.report.figures import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharex=True)
    for ax, k, title in zip(axes, ("top1", "top5"), ("Top-1 accuracy", "Top-5 accuracy")):
        for (label, part), marker in zip(frame.groupby("series", sort=False), "os^v"):
            ax.plot(part.iteration, part[k], marker=marker, markersize=4, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("finetuning iterations")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle(caption, fontsize=8, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, path, ("png", "pdf"))


def run_figure(figure: str, profile: str, cluster: str, overrides: tuple[str, ...], store: Path,
               out_dir: Path) -> dict[str, Path]:
    from repro.dispatch import dispatch
    from repro.config import compose
    from repro.io import atomic_write_json, atomic_write_text
    from repro.jobs.store import JobStore
    from repro.report.accuracy_curves import curve_claim_verdicts, with_intervals
    from repro.report.provenance import git_commit
    from repro.table import validate

    if figure not in FIGURES:
        raise UserError(f"unknown figure {figure!r}: choose one of {', '.join(FIGURES)}")
    cfg = compose(FIGURES[figure], profile, cluster, overrides)
    validate(cfg)
    jobs = figure6_jobs(cfg)
    t0 = time.time()
    print(dispatch(list(jobs.values()), cfg.cluster, store).line())
    results = {label: JobStore(store).dir(job).result() for label, job in jobs.items()}
    frame = curves_frame(results)
    labels = list(jobs)
    n_eval = min(r["n_eval"] for r in results.values())
    claims = curve_claim_verdicts(frame, labels[0], labels[1], n_eval)
    frame = with_intervals(frame, n_eval)
    caption = (f"profile {cfg.profile}; {cfg.data.name} {cfg.data.resolution}x{cfg.data.resolution}; "
               f"accuracy on {n_eval} noised test images (95% Wilson intervals in the csv); commit {git_commit()}")
    out_dir = Path(out_dir)
    key = cfg.figure6.key
    paths = {"csv": atomic_write_text(out_dir / f"{key}.csv", frame.to_csv(index=False))}
    for p in plot(frame, out_dir / key, caption):
        paths[p.suffix[1:]] = p
    paths["json"] = atomic_write_json(out_dir / f"{key}.json", {
        "figure": "6", "series": {label: job.key for label, job in jobs.items()}, "claims": claims,
        "provenance": {"profile": cfg.profile, "dataset": f"{cfg.data.name} {cfg.data.resolution}x{cfg.data.resolution}",
                       "n_eval": n_eval, "git_commit": git_commit(), "wall_time_s": round(time.time() - t0, 1)},
        "curves": frame.to_dict(orient="records")})
    md = ["## Figure 6: classification accuracy vs finetuning iterations", "", caption, "",
          frame.to_markdown(index=False, floatfmt=".3f"), "", "### Claims (Figure 6)", ""]
    md += [f"- **{c['status']}**: {c['text']}. {c['detail']}" for c in claims]
    paths["md"] = atomic_write_text(out_dir / f"{key}.md", "\n".join(md) + "\n")
    return paths


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("figure")
@click.argument("overrides", nargs=-1)
@table_options
def main(figure: str, overrides: tuple[str, ...], profile: str, cluster: str, store: Path, out_dir: Path) -> None:
    """Reproduce a figure of MT-Diffusion (6)."""
    paths = run_figure(figure, profile, cluster, overrides, store, profile_out(out_dir, profile))
    print(f"figure {figure}: " + ", ".join(str(p) for p in paths.values()))
    print(Path(paths["md"]).read_text())


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.figure", argv)


if __name__ == "__main__":
    sys.exit(cli())
