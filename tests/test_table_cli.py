"""Bad input exits 2 with one line, before any job starts (nothing written)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repro.table", *args, "--store", str(tmp_path / "jobs"),
                           "--out", str(tmp_path / "tables")], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}, timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["9"], "unknown table '9'"),
    (["1", "--profile", "huge"], "unknown profile 'huge'"),
    (["1", "train.stepz=3"], "train.stepz"),
    (["1", "train.steps=abc"], "train.steps expects a number"),
    (["1", "eval.mask_counts=[5,10,15,200]"], "eval.mask_counts"),
    (["1", "eval.mask_counts=[5,10]"], "has 2 entries but the table has 4 columns"),
    (["1", "task.train_patches=[3,1]"], "task.train_patches"),
    (["1", "notkeyvalue"], "is not key=value"),
    (["1", "--cluster", "nowhere"], "nowhere"),
    (["1", "--profile", "paper", "data.root=/nonexistent/imagenet"], "/nonexistent/imagenet"),
])
def test_bad_input_exits_2_with_one_line_before_any_job(tmp_path, args, needle):
    proc = run_cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "tables").exists()


def test_paper_profile_names_missing_weights_when_data_exists(tmp_path):
    from PIL import Image

    for split in ("train", "val"):   # one decodable image per split: the data checks pass
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / split / "n01440764" / "a.png")
    proc = run_cli(tmp_path, "1", "--profile", "paper", f"data.root={tmp_path}/imagenet/train",
                   f"data.test_root={tmp_path}/imagenet/val", f"weights.lpips_alexnet={tmp_path}/alexnet.pth")
    assert proc.returncode == 2
    assert "alexnet-owt-7be5be79.pth" in proc.stderr and str(tmp_path / "alexnet.pth") in proc.stderr


def test_paper_profile_opens_some_images_before_any_job(tmp_path):
    """A class folder of files that are not images stops the run with the file's path."""
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
        (tmp_path / "imagenet" / split / "n01440764" / "a.JPEG").write_bytes(b"not a jpeg")
    proc = run_cli(tmp_path, "1", "--profile", "paper", f"data.root={tmp_path}/imagenet/train",
                   f"data.test_root={tmp_path}/imagenet/val")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot read image" in proc.stderr and "a.JPEG" in proc.stderr
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "tables").exists()
