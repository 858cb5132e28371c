"""Builders the tests share: tiny ADM networks, the released checkpoints' layouts, random weights,
and the tiny U-Net / head settings of the task tests (import: `from helpers import ...`; pytest
puts tests/ on sys.path, tests/ being no package).

One definition each, so that a test file says only what it changes (`tiny_unet(attention_resolutions=(4,))`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from repro.nn import EncoderUNetModel, UNetModel

LAYOUTS = Path(__file__).parent / "data" / "adm-checkpoints"   # state-dict layouts of the released checkpoints

# The U-Net and head settings of the task tests at 16 px (cfg["unet"] / cfg["task"]["head"] form):
# two levels, attention at 8 px, so a forward pass of a task's model takes milliseconds.
TINY_UNET = dict(model_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[8],
                 num_head_channels=8, dropout=0.0, use_scale_shift_norm=True, resblock_updown=True)
TINY_HEAD = dict(width=8, depth=1, attention_resolutions=[8], channel_mult=[1, 2], num_head_channels=8)


def load_layout(name: str) -> dict:
    """tests/data/adm-checkpoints/<name>.json: a released checkpoint's flags, state-dict keys and shapes."""
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter with N(0, scale^2) values from a seeded generator, in place.
    ADM zero-initialises its output convs: without this a fresh network predicts 0 for any
    input, and a test comparing two paths through it could not fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return module


def tiny_unet(**kw) -> UNetModel:
    """An 8 px ADM U-Net with every block kind (attention, scale-shift norm, resblock up/down),
    built after torch.manual_seed(0); `kw` overrides any argument."""
    args = dict(image_size=8, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
                use_scale_shift_norm=True, resblock_updown=True)
    args.update(kw)
    torch.manual_seed(0)
    return UNetModel(**args)


def tiny_classifier(pool: str = "attention", **kw) -> EncoderUNetModel:
    """A 16 px ADM noisy classifier (5 classes) with the `pool` head, built after
    torch.manual_seed(0); `kw` overrides any argument."""
    args = dict(image_size=16, in_channels=3, model_channels=16, out_channels=5, num_res_blocks=1,
                attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=8,
                use_scale_shift_norm=True, resblock_updown=True, pool=pool)
    args.update(kw)
    torch.manual_seed(0)
    return EncoderUNetModel(**args)


def tiny_table_args(table: str, root: Path, *overrides: str) -> list[str]:
    """`python -m repro.table <table> --profile tiny` with the job store, the tables and the
    embedded data all under `root` (a scratch folder), then `overrides`."""
    return [table, "--profile", "tiny", "--store", str(root / "jobs"), "--out", str(root / "tables"),
            f"data.root={root / 'data'}", *overrides]
