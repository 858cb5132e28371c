"""Datasets: the embedded (procedural) dataset, patch masks, and loaders for ImageNet, Cityscapes, night2day."""
from repro.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IGNORE_ID,
    LABEL_TO_TRAIN_ID,
    NUM_CITYSCAPES_CLASSES,
    Cityscapes,
    label_ids_to_train_ids,
)
from repro.data.embedded import (
    NUM_CLASSES,
    NUM_SEMANTIC_CLASSES,
    OBJECT_CLASSES,
    SEMANTIC_CLASSES,
    SEMANTIC_PALETTE,
    EmbeddedDataset,
    EmbeddedSplit,
    content_sha256,
    ensure_embedded,
    generate_embedded,
    load_split,
    save_split,
)
from repro.data.imagenet import ImageNetFolder, center_crop_arr
from repro.data.masks import apply_mask, random_patch_masks
from repro.data.night2day import Night2Day, split_ab
from repro.data.pixels import colorize, nearest_palette_ids, to_model_space, to_uint8

__all__ = [
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "IGNORE_ID", "LABEL_TO_TRAIN_ID", "NUM_CITYSCAPES_CLASSES",
    "Cityscapes", "label_ids_to_train_ids",
    "NUM_CLASSES", "NUM_SEMANTIC_CLASSES", "OBJECT_CLASSES", "SEMANTIC_CLASSES", "SEMANTIC_PALETTE",
    "EmbeddedDataset", "EmbeddedSplit", "content_sha256", "ensure_embedded", "generate_embedded", "load_split", "save_split",
    "ImageNetFolder", "center_crop_arr",
    "apply_mask", "random_patch_masks",
    "Night2Day", "split_ab",
    "colorize", "nearest_palette_ids", "to_model_space", "to_uint8",
]
