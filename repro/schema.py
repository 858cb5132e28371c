"""The schema of a composed table config: every value a job reads, checked before any job starts.

One place for what a value may be: its type (an int is not a float, a bool is not an int:
`train.steps=2.5` and `train.steps=true` both fail), its range (`train.steps >= 1`,
`train.ema_rate` in [0, 1)), the names it may take (schedules, aggregation weights, priors,
network inputs), and the relations between values (respacing against T, the resolution
against the U-Net's downsampling, `eval.n_images` against the test split). Unknown keys are
refused too: hydra's `+key=value` adds any key, and a typo'd one would otherwise be hashed
into job keys and silently ignored by the code. The known keys are those of the table's own
spec composed without overrides, plus the optional keys listed in OPTIONAL.

`check(cfg, default)` raises `UserError` with one line naming the key, what it got and what
it takes. repro.table, repro.figure and repro.status call it (through repro.config.compose
and repro.table.validate) before planning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from repro.data.dense_augment import AUGMENTATIONS
from repro.data.pixels import UINT8_ROUNDINGS
from repro.diffusion.aggregation import WEIGHT_KINDS
from repro.diffusion.network_input import NETWORK_INPUTS
from repro.diffusion.sampling import PRIORS
from repro.diffusion.schedule import SCHEDULES
from repro.errors import UserError
from repro.tasks.generation import SAMPLERS
from repro.nn.precision import AUTOCAST_SETTINGS

INF = math.inf


@dataclass(frozen=True)
class Rule:
    """What one config value may be: `kind` (int, float, bool, str, ints: a list of ints; choice:
    one of `names`, which may mix strings, booleans and null), a closed range [lo, hi] (or
    half-open below `hi` when `hi_open`), or a set of `names`."""

    kind: str
    lo: float = -INF
    hi: float = INF
    hi_open: bool = False
    names: Sequence[str] = ()
    nullable: bool = False

    def describe(self) -> str:
        if self.names:
            return f"one of {', '.join(map(_name, self.names))}"
        what = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "ints": "a list of integers", "choice": "a name"}[self.kind]
        if self.lo > -INF or self.hi < INF:
            lo = "" if self.lo == -INF else f">= {self.lo:g}"
            hi = "" if self.hi == INF else f"{'<' if self.hi_open else '<='} {self.hi:g}"
            what += " " + " and ".join(s for s in (lo, hi) if s)
        return what + (" (or null)" if self.nullable else "")


def _int(lo: float = -INF, hi: float = INF, **kw: Any) -> Rule:
    return Rule("int", lo, hi, **kw)


def _float(lo: float = -INF, hi: float = INF, **kw: Any) -> Rule:
    return Rule("float", lo, hi, **kw)


POSITIVE = _int(1)
# train/sample.autocast: none|bf16 (true/false and null read as bf16/none: repro.nn.precision)
AUTOCAST = Rule("choice", names=tuple(k for k in AUTOCAST_SETTINGS if k is not None), nullable=True)
RULES: dict[str, Rule] = {
    "seed": _int(0),
    "data.n_train": _int(1, nullable=True),
    "data.n_test": _int(1, nullable=True),
    "data.resolution": _int(8),
    "data.seed": _int(0),
    "features.steps": POSITIVE,
    "features.batch_size": POSITIVE,
    "features.lr": _float(1e-12),
    "diffusion.schedule": Rule("str", names=SCHEDULES),
    "diffusion.T": POSITIVE,
    "diffusion.weights": Rule("str", names=WEIGHT_KINDS),
    "diffusion.weight_value": _float(),
    "diffusion.prior": Rule("str", names=PRIORS),
    "diffusion.network_input": Rule("str", names=NETWORK_INPUTS),
    "diffusion.lam": _float(0),
    "unet.model_channels": POSITIVE,
    "unet.channel_mult": Rule("ints", 1),
    "unet.num_res_blocks": POSITIVE,
    "unet.attention_resolutions": Rule("ints", 1),
    "unet.num_head_channels": _int(-1),
    "unet.num_heads": POSITIVE,
    "unet.dropout": _float(0, 1, hi_open=True),
    "unet.use_scale_shift_norm": Rule("bool"),
    "unet.resblock_updown": Rule("bool"),
    "unet.learn_sigma": Rule("bool"),
    "unet.use_new_attention_order": Rule("bool"),
    "unet.use_sdpa": Rule("bool"),
    "unet.use_checkpoint": Rule("bool"),
    "unet.channels_last": Rule("bool"),
    "train.vlb_weight": _float(0),
    "train.steps": POSITIVE,
    "train.batch_size": POSITIVE,
    "train.lr": _float(1e-12),
    "train.ema_rate": _float(0, 1, hi_open=True),
    "train.checkpoint_every": POSITIVE,
    "train.snapshot_every": _int(0),
    "train.log_every": POSITIVE,
    "train.sleep_s": _float(0),
    "train.autocast": AUTOCAST,
    "train.augment": Rule("str", names=AUGMENTATIONS),
    "sample.autocast": AUTOCAST,
    "eval.uint8_rounding": Rule("str", names=UINT8_ROUNDINGS),
    "sample.sampler": Rule("str", names=tuple(SAMPLERS)),
    "sample.sleep_s": _float(0),
    "sample.steps": POSITIVE,
    "sample.batch_size": POSITIVE,
    "sample.clip_denoised": Rule("bool"),
    "eval.n_images": POSITIVE,
    "eval.batch_size": POSITIVE,
    "eval.composite": Rule("bool"),
    "eval.isc_splits": POSITIVE,
    "eval.prc_k": POSITIVE,
    "guidance_scale": _float(0),
}

# Keys a spec may lack that the code reads when given (with `+key=value`): tests' sleep hooks,
# the network input reading, SLURM's extra sbatch options (cluster.* is free-form).
OPTIONAL = ("train.sleep_s", "sample.sleep_s", "diffusion.network_input",
            # readings and switches a spec or profile may leave at their defaults
            "train.vlb_weight", "train.autocast", "sample.autocast", "sample.sampler", "eval.uint8_rounding",
            # DiffusionMTL's training augmentation (on in its paper profiles; `none` where absent)
            "train.augment",
            # ADM's released layouts (learned variance, new attention order) and the speed switches
            "unet.learn_sigma", "unet.use_new_attention_order", "unet.use_sdpa", "unet.use_checkpoint",
            "unet.channels_last")
FREE_FORM = ("cluster",)


def _kind_ok(rule: Rule, value: Any) -> bool:
    if rule.kind == "bool":
        return isinstance(value, bool)
    if rule.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if rule.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if rule.kind == "str":
        return isinstance(value, str)
    if rule.kind == "choice":   # a name, or a boolean where the names hold one (never a number)
        return isinstance(value, (str, bool))
    return isinstance(value, (list, ListConfig)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value)


def check_value(key: str, value: Any, rule: Rule) -> None:
    """One value against its rule; UserError naming the key, the value and what it takes."""
    if value is None and rule.nullable:
        return
    bad = UserError(f"{key}={_show(value)}: {key} takes {rule.describe()}")
    if not _kind_ok(rule, value):
        raise bad
    if rule.names and value not in rule.names:
        raise bad
    for v in (value if rule.kind == "ints" else [value]):
        if isinstance(v, (int, float)) and not (rule.lo <= v and (v < rule.hi if rule.hi_open else v <= rule.hi)):
            raise bad
        if isinstance(v, float) and not math.isfinite(v):
            raise bad


def _name(value: Any) -> str:
    """A name as a user types it on the command line: bf16, true, null."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value))
    return repr(value) if isinstance(value, str) else str(value)


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of the config's blocks (lists are leaves)."""
    if isinstance(node, DictConfig):
        out: dict[str, Any] = {}
        for k in node.keys():
            out.update(_leaves(node[k], f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: node}   # an empty block is a leaf
    return {prefix[:-1]: node}


def unknown_keys(default: DictConfig, cfg: DictConfig) -> list[str]:
    """Keys of `cfg` that neither the spec composed without overrides nor OPTIONAL knows."""
    known = set(_leaves(default)) | set(OPTIONAL)
    return [k for k in _leaves(cfg) if k not in known and k.split(".")[0] not in FREE_FORM
            and not any(k.startswith(f"{kn}.") or kn.startswith(f"{k}.") for kn in known)]


def check(cfg: DictConfig) -> None:
    """Every rule of RULES on the values `cfg` holds, then the relations between them."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default="__absent__")
        if value != "__absent__":
            check_value(key, value, rule)
    _check_relations(cfg)


def _check_relations(cfg: DictConfig) -> None:
    T = OmegaConf.select(cfg, "diffusion.T")
    steps = OmegaConf.select(cfg, "sample.steps")
    if T is not None and steps is not None and steps > T:
        raise UserError(f"sample.steps={steps} respaces T={T} diffusion steps: it must be at most T "
                        f"(lower sample.steps or raise diffusion.T)")
    res = OmegaConf.select(cfg, "data.resolution")
    mult = OmegaConf.select(cfg, "unet.channel_mult")
    if res is not None and mult is not None:
        if len(mult) < 1:
            raise UserError("unet.channel_mult is empty: give one multiplier per resolution level, e.g. [1,2,2]")
        factor = 2 ** (len(mult) - 1)
        if res % factor or res // factor < 1:
            raise UserError(f"data.resolution={res} does not halve {len(mult) - 1} times (unet.channel_mult "
                            f"{list(mult)} has {len(mult)} levels): use a resolution divisible by {factor} "
                            f"or fewer levels")
        for r in OmegaConf.select(cfg, "unet.attention_resolutions") or []:
            if res % r:
                raise UserError(f"unet.attention_resolutions entry {r} does not divide data.resolution={res}")
    n_images, n_test = OmegaConf.select(cfg, "eval.n_images"), OmegaConf.select(cfg, "data.n_test")
    if (cfg.get("data", {}).get("name") == "embedded" and isinstance(n_images, int) and isinstance(n_test, int)
            and n_images > n_test):
        raise UserError(f"eval.n_images={n_images} is more than the {n_test} test images (data.n_test): "
                        f"lower eval.n_images or raise data.n_test")
