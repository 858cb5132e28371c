"""python -m repro.features [--profile smoke]: train (or reuse) the embedded feature network.

The same job the tables depend on (same config, same key in the job store), run on its
own as the pipeline's "features" stage; writes tables/features.json (which network, its
accuracy, its job key) so every table can name the extractor behind its numbers.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from repro.cli import out_option, profile_option, profile_out, run, store_option
from repro.errors import UserError


@click.command()
@profile_option
@store_option
@out_option
def main(profile: str, store: Path, out_dir: Path) -> None:
    from repro.dispatch import dispatch
    from repro.config import compose
    from repro.io import atomic_write_json
    from repro.jobs.store import JobStore
    from repro.plan import features_job

    cfg = compose("1", profile)
    job = features_job(cfg)
    if job is None:
        raise UserError(f"profile {profile} uses pretrained feature networks (features.kind={cfg.features.kind})")
    print(dispatch([job], cfg.cluster, store).line())
    result = JobStore(store).dir(job).result()
    doc = {"profile": profile, "config_key": job.key, "network": "FeatureNet (repro/metrics/feature_net.py)",
           **{k: v for k, v in result.items() if k != "provenance"}}
    print(atomic_write_json(profile_out(out_dir, profile) / "features.json", doc))


if __name__ == "__main__":
    sys.exit(run(main, "python -m repro.features"))
