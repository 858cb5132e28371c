"""Job body: train the embedded profile's feature network (LPIPS, FID, IS backbone).

No pretrained network can be downloaded here, so the embedded profile trains its own
classifier on the embedded training split; every table names it as its extractor. The
training itself is repro.metrics.train_feature_net (why it is not a step of the training
harness, repro/jobs/harness.py: its docstring).
"""
from __future__ import annotations

from typing import Any

from repro.data.registry import embedded_files
from repro.errors import UserError
from repro.jobs.store import JobDir

FILE = "feature_net.pt"


def reads(view: dict) -> list[str]:
    """What this body reads (repro.jobs.job.select): both embedded splits, the recipe, the seed."""
    return ["seed", "features.steps", "features.batch_size", "features.lr", *(f"data.{k}" for k in view["data"])]


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    from repro.data.embedded import load_split
    from repro.metrics import save_feature_net, train_feature_net
    from repro.metrics.feature_net import feature_net_accuracy

    f = cfg["features"]
    if cfg["data"]["name"] != "embedded":   # other profiles use pretrained networks (features.kind)
        raise UserError(f"the feature network trains on the embedded dataset, not {cfg['data']['name']!r}")
    train = load_split(embedded_files(cfg["data"])["train"])
    net, stats = train_feature_net(train.images, train.labels, steps=f["steps"], batch_size=f["batch_size"],
                                   lr=f["lr"], seed=cfg["seed"])
    test = load_split(embedded_files(cfg["data"])["test"])
    stats["test_accuracy"] = feature_net_accuracy(net, test.images, test.labels, batch_size=256)
    print(f"feature network: train accuracy {stats.get('train_accuracy')}, test accuracy {stats['test_accuracy']:.3f}")
    save_feature_net(net, out / FILE)
    return {"file": FILE, **{k: v for k, v in stats.items() if isinstance(v, (int, float, str))}}
