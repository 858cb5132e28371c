"""Crafted pickles through every load path the project has: each is refused with a UserError
naming the file, and the code the pickle carries never runs (its marker file is not written)."""
from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from repro.errors import UserError
from repro.io import load_torch


class Payload:
    """Unpickling this runs `touch <marker>`: how a crafted checkpoint runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted(tmp_path: Path, name: str, fmt: str) -> tuple[Path, Path]:
    """A torch file whose state dict hides the payload: torch's zip format, or a bare pickle."""
    marker = tmp_path / f"{name}.{fmt}.ran"
    path = tmp_path / f"{fmt}" / name
    path.parent.mkdir(exist_ok=True)
    payload = {"state_dict": {"w": torch.zeros(2)}, "kind": "repro.metrics.FeatureNet", "x": Payload(marker)}
    if fmt == "zip":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    return path, marker


def test_the_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The oracle for the tests below: an unrestricted unpickler writes the marker."""
    path, marker = crafted(tmp_path, "probe.pt", "pickle")
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


def _released(path: Path):
    from repro.config import compose
    from repro.jobs import released
    from repro.plan import plan

    cfg = compose("1", "tiny", "local", [f"data.root={path.parent / 'data'}"])
    train = next(r for r in plan(cfg) if r.name == "MT-Diffusion").job.deps["samples"].deps["model"]
    return released.run({**dict(train.config), "released": str(path)}, None, {})


def _evaluate_lpips(path: Path):
    from repro.jobs.evaluate import lpips_model
    from repro.jobs.store import JobDir

    (path.parent / "feat").mkdir(exist_ok=True)
    (path.parent / "feat" / "feature_net.pt").write_bytes(path.read_bytes())
    return lpips_model({"features": {"kind": "embedded"}}, {"features": JobDir(path.parent, "feat")})


def _evaluate_fidelity(path: Path):
    from repro.jobs.evaluate import generation_extractor
    from repro.jobs.store import JobDir

    (path.parent / "feat2").mkdir(exist_ok=True)
    (path.parent / "feat2" / "feature_net.pt").write_bytes(path.read_bytes())
    return generation_extractor({"features": {"kind": "embedded"}}, {"features": JobDir(path.parent, "feat2")})


def _lpips_alexnet(path: Path):
    from repro.metrics import lpips_alexnet

    return lpips_alexnet(path)


def _inception(path: Path):
    from repro.metrics import inception_extractor

    return inception_extractor(path, cuda=False)


def _feature_net(path: Path):
    from repro.metrics import load_feature_net

    return load_feature_net(path)


def _autoencoder(path: Path):
    from repro.nn.autoencoder import kl_f8

    return kl_f8(path)


LOADERS = {
    "load_torch": lambda p: load_torch(p),
    "feature_net": _feature_net,
    "evaluate_lpips": _evaluate_lpips,
    "evaluate_fidelity": _evaluate_fidelity,
    "lpips_alexnet": _lpips_alexnet,
    "inception": _inception,
    "autoencoder": _autoencoder,
    "released": _released,
}


@pytest.mark.parametrize("fmt", ["zip", "pickle"])
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path, loader, fmt):
    path, marker = crafted(tmp_path, "weights.pt", fmt)
    with pytest.raises(UserError) as err:
        LOADERS[loader](path)
    message = str(err.value)
    assert ("feature_net.pt" if loader.startswith("evaluate") else str(path)) in message   # names the file
    assert "\n" not in message
    assert not marker.exists()


def test_refusal_names_what_the_pickle_asked_for(tmp_path):
    path, marker = crafted(tmp_path, "w.pt", "zip")
    with pytest.raises(UserError, match=r"refused to load .*w\.pt.*GLOBAL posix\.system.*could run code"):
        load_torch(path, what="weights")
    assert not marker.exists()


def test_a_damaged_file_is_an_error_naming_it_not_a_refusal(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3)}, good)
    assert torch.equal(load_torch(good)["w"], torch.arange(3))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(UserError, match=r"cannot read .*cut\.pt: damaged or not a torch file"):
        load_torch(cut)
    with pytest.raises(UserError, match="not found"):
        load_torch(tmp_path / "absent.pt")


def test_no_torch_load_with_weights_only_false_in_the_package():
    root = Path(__file__).resolve().parents[1] / "repro"
    hits = subprocess.run(["grep", "-rn", "weights_only=False", str(root), "--include=*.py"],
                          capture_output=True, text=True).stdout.splitlines()
    assert hits == []


def test_inception_weights_of_the_wrong_shape_are_a_user_error(tmp_path):
    from repro.metrics import inception_extractor

    path = tmp_path / "inception.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(UserError, match="not torch-fidelity's Inception-v3 state dict"):
        inception_extractor(path, cuda=False)
