"""MT-Diffusion core math: schedules, aggregation weights, the forward aggregation
process (eq. 3-5), the multi-task loss (eq. 6), the samplers (Algorithm 1, DDIM, SDEdit) and
Algorithm 1's variants (classifier guidance, known z_0, masked restoration).

Steps are 0-based code steps ``k = 0..K-1`` (the paper's ``t = k + 1``) throughout.
"""

from repro.diffusion.aggregation import WEIGHT_KINDS, aggregation_weights
from repro.diffusion.guidance import classifier_guidance
from repro.diffusion.known_z import sample_known_z
from repro.diffusion.loss import MODALITY_KINDS, MultiTaskLoss, modality_loss, training_losses
from repro.diffusion.process import MTProcess
from repro.diffusion.restoration import composite, restore_masked
from repro.diffusion.sampling import PRIORS, Modality, algorithm1, ddim_sample, sdedit
from repro.diffusion.schedule import SCHEDULES, make_betas, space_timesteps

__all__ = [
    "MODALITY_KINDS",
    "PRIORS",
    "SCHEDULES",
    "WEIGHT_KINDS",
    "MTProcess",
    "Modality",
    "MultiTaskLoss",
    "aggregation_weights",
    "algorithm1",
    "classifier_guidance",
    "composite",
    "ddim_sample",
    "make_betas",
    "modality_loss",
    "restore_masked",
    "sample_known_z",
    "sdedit",
    "space_timesteps",
    "training_losses",
]
