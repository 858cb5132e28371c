"""Metrics: LPIPS (Table 1) and the ADM suite's IS / FID / sFID / Precision / Recall (Tables 2-3).

Paper profile: lpips' AlexNet and torch-fidelity's Inception-v3, weights from local files.
Embedded profile: a FeatureNet trained on the embedded data, plugged into the same code paths.
"""
from repro.metrics.accuracy import topk_accuracy
from repro.metrics.feature_extractors import (
    FEATURENET_NAME,
    INCEPTION_FILE,
    INCEPTION_NAME,
    FeatureNetExtractor,
    InceptionSpatialExtractor,
    featurenet_extractor,
    inception_extractor,
)
from repro.metrics.feature_net import (
    FeatureNet,
    FeatureNetConfig,
    load_feature_net,
    save_feature_net,
    train_feature_net,
)
from repro.metrics.fidelity import (
    ReferenceStats,
    compute_generation_metrics,
    extract_features,
    frechet_distance,
    gaussian_statistics,
    inception_score,
    precision_recall,
    reference_statistics,
)
from repro.metrics.lpips_metric import ALEXNET_FILE, lpips_alexnet, lpips_distance, lpips_from_feature_net

__all__ = [
    "ALEXNET_FILE",
    "FEATURENET_NAME",
    "INCEPTION_FILE",
    "INCEPTION_NAME",
    "FeatureNet",
    "FeatureNetConfig",
    "FeatureNetExtractor",
    "InceptionSpatialExtractor",
    "ReferenceStats",
    "compute_generation_metrics",
    "extract_features",
    "featurenet_extractor",
    "frechet_distance",
    "gaussian_statistics",
    "inception_extractor",
    "inception_score",
    "load_feature_net",
    "lpips_alexnet",
    "lpips_distance",
    "lpips_from_feature_net",
    "precision_recall",
    "reference_statistics",
    "save_feature_net",
    "topk_accuracy",
    "train_feature_net",
]
