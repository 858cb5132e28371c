"""python -m repro.data [--profile smoke] [--verify]: make (or check) a profile's embedded datasets.

The embedded dataset and DiffusionMTL's dense scenes (with their partial-label files) are pure
functions of (generator version, seed, size, resolution): `--verify` draws them again in memory
and checks that the files on disk hold exactly that (what DVC's first stage runs; data.dvc pins
the same bytes).
"""
from __future__ import annotations

import sys

import click

from repro.cli import profile_option, run
from repro.errors import UserError


@click.command()
@profile_option
@click.option("--verify", is_flag=True, help="regenerate in memory and compare with the files on disk")
def main(profile: str, verify: bool) -> None:
    from repro.config import compose
    from repro.data.embedded import content_sha256, ensure_embedded, generate_embedded, load_split

    data = compose("1", profile).data
    if data.name != "embedded":
        raise UserError(f"profile {profile} uses dataset {data.name!r}, which is read from data.root, not generated")
    paths = ensure_embedded(data.root, data.n_train, data.n_test, data.seed, data.resolution)
    for stream, (split, path) in enumerate(paths.items()):
        line = f"{split}: {path}"
        if verify:
            expected = content_sha256(generate_embedded(len(load_split(path).labels), data.seed, data.resolution,
                                                        stream=stream))
            if content_sha256(load_split(path)) != expected:
                raise UserError(f"{path} differs from what the generator makes: delete it and run python -m repro.data")
            line += " (verified against the generator)"
        print(line)
    dense = compose("diffusionmtl", profile).data   # DiffusionMTL's scenes (both of its specs read the same files)
    if dense.name == "dense_scenes":
        from repro.data.dense_scenes import ensure_dense, verify_dense

        make = verify_dense if verify else ensure_dense
        paths = make(dense.root, dense.n_train, dense.n_test, dense.seed, dense.resolution)
        for name, path in paths.items():
            print(f"dense {name}: {path}" + (" (verified against the generator)" if verify else ""))


if __name__ == "__main__":
    sys.exit(run(main, "python -m repro.data"))
