"""Compose a table's config with hydra and check it before any job starts.

`benchmarks/tableN.yaml` is the spec; `benchmarks/profile/<p>.yaml` sets the scale shared
by all tables; `benchmarks/tableN/<p>.yaml` (optional) holds what one table changes at
one profile (e.g. the paper's Appendix E.2 settings for Table 1); `benchmarks/cluster/`
holds the dispatch settings. Overrides are hydra's `key=value`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from repro.errors import UserError
from repro.report.paper import BENCHMARKS, NAMED_SPECS, spec_stems

PROFILES = ("tiny", "smoke", "paper")


def available_tables() -> list[str]:
    """Numbered tables (benchmarks/tableN.yaml) first, then the named specs that exist."""
    return [s.removeprefix("table") if s not in NAMED_SPECS else s for s in spec_stems()]


def spec_name(table: str) -> str:
    """The spec file stem of a table argument: "1" -> "table1", "night2day" -> "night2day"."""
    return table if table in NAMED_SPECS else f"table{table}"


def compose(table: str, profile: str = "smoke", cluster: str = "local",
            overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The resolved config of one table, or UserError naming what is wrong."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if table not in available_tables():
        raise UserError(f"unknown table {table!r}: choose one of {', '.join(available_tables())} (or all)")
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    for ov in overrides:
        if "=" not in ov:
            raise UserError(f"override {ov!r} is not key=value (e.g. train.steps=200)")
    base = [f"profile={profile}", f"cluster={cluster}"]
    try:
        with initialize_config_dir(config_dir=str(BENCHMARKS), version_base=None):
            default = hydra_compose(spec_name(table), overrides=base)
            cfg = hydra_compose(spec_name(table), overrides=base + list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(_one_line(err)) from None
    for ov in overrides:
        _check_override_type(default, cfg, ov)
    from repro.schema import unknown_keys   # `+key=...` adds any key; only the spec's own are read

    unknown = unknown_keys(default, cfg)
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}: the {spec_name(table)} spec has no such "
                        f"setting (see benchmarks/{spec_name(table)}.yaml and benchmarks/profile/{profile}.yaml)")
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise UserError(_one_line(err)) from None
    return cfg


def _one_line(err: Exception) -> str:
    msg = str(err).strip().splitlines()
    first = msg[0] if msg else type(err).__name__
    if "Could not find" in first and len(msg) > 2:   # hydra lists the available options below
        opts = [m.strip() for m in msg[1:] if m.startswith("\t")]
        first += f" (available: {', '.join(opts)})" if opts else ""
    return f"bad configuration: {first}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "mapping"
    return "null" if value is None else type(value).__name__


def _check_override_type(default: DictConfig, cfg: DictConfig, override: str) -> None:
    """An override must keep the type of the spec's value (int->float is fine)."""
    key = override.split("=", 1)[0].lstrip("+~")
    if "/" in key or key in ("profile", "cluster") or OmegaConf.select(default, key, default=None) is None:
        return  # a group choice, a new key (+key=...), or a null default: nothing to compare
    if key.startswith("cluster."):
        return  # cluster settings mix names and numbers (workers: auto | 4): checked by repro.dispatch
    old, new = OmegaConf.select(default, key), OmegaConf.select(cfg, key)
    if _kind(old) != _kind(new):
        raise UserError(f"override {override!r}: {key} expects a {_kind(old)} "
                        f"(default {OmegaConf.to_yaml(old).strip() if isinstance(old, (DictConfig, ListConfig)) else old!r}), got {new!r}")
    if isinstance(old, (list, ListConfig)) and len(old) and len(new):
        if _kind(old[0]) != _kind(new[0]):
            raise UserError(f"override {override!r}: {key} expects a list of {_kind(old[0])}, got {list(new)!r}")


def to_dict(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node
