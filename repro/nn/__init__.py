"""Networks: the ADM U-Net backbone, ADM's noisy classifier, MT-Diffusion's modality heads."""
from repro.nn.attention import AttentionBlock, AttentionPool2d
from repro.nn.blocks import Downsample, GroupNorm32, ResBlock, Upsample, timestep_embedding
from repro.nn.classifier import EncoderUNetModel, classifier_from_flags
from repro.nn.fast_paths import set_fast_paths, to_channels_last
from repro.nn.heads import OutputBlockHead, PooledLinearHead, PooledMLPHead
from repro.nn.mt_model import TAPS, MTDiffusionModel
from repro.nn.precision import autocast
from repro.nn.unet import UNetModel, pad_input_conv, unet_from_flags

__all__ = [
    "AttentionBlock",
    "AttentionPool2d",
    "Downsample",
    "EncoderUNetModel",
    "GroupNorm32",
    "MTDiffusionModel",
    "OutputBlockHead",
    "PooledLinearHead",
    "PooledMLPHead",
    "ResBlock",
    "TAPS",
    "UNetModel",
    "Upsample",
    "autocast",
    "classifier_from_flags",
    "pad_input_conv",
    "set_fast_paths",
    "timestep_embedding",
    "to_channels_last",
    "unet_from_flags",
]
