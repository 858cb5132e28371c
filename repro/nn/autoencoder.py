"""The latent space of Table 4 and night2day at paper scale: LDM's kl-f8 autoencoder.

Appendix E.1 runs image translation in the latents of the latent-diffusion codebase with
its released kl-f8 first stage, and uses the same VAE encoder as the modality encoder
E_i. The architecture is diffusers' `AutoencoderKL` with the kl-f8 layout (4 levels,
x8 downsampling, 4 latent channels); the weights come from a local file, either a
diffusers-format state dict (`.safetensors`, `.bin`, `.pt`), a diffusers model folder, or
LDM's original `model.ckpt` (converted with diffusers' own key mapping).

The embedded profile does not use this module: it diffuses in pixel space with the
identity encoder (see the Table 4 caption).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from repro.errors import UserError
from repro.weights import check_weights
from repro.io import load_torch

# LDM's models/first_stage_models/kl-f8/config.yaml in diffusers' terms.
KL_F8 = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    sample_size=256,
)
DOWNSAMPLE = 8
# LDM scales kl-f8 latents to roughly unit variance before diffusing them (scale_factor).
DEFAULT_SCALE = 0.18215


def kl_f8(path: str | Path, config: dict | None = None):
    """diffusers AutoencoderKL with the kl-f8 layout and the weights at `path` (UserError if absent)."""
    from diffusers import AutoencoderKL

    path = check_weights("autoencoder", path)
    if path.is_dir():
        return AutoencoderKL.from_pretrained(path).eval().requires_grad_(False)
    cfg = dict(KL_F8 if config is None else config)
    model = AutoencoderKL(**cfg)
    state = _read_state_dict(path)
    if any(k.startswith("encoder.down.") for k in state):  # LDM naming: convert to diffusers'
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, model.config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise UserError(f"{path} is not a kl-f8 AutoencoderKL checkpoint: {len(missing)} weights missing "
                        f"(e.g. {missing[0]})")
    return model.eval().requires_grad_(False)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = load_torch(path, what="autoencoder weights")   # UserError for code-carrying pickles
    except UserError:
        raise
    except Exception as err:  # many formats fail in many ways; all mean "not readable"
        raise UserError(f"cannot read autoencoder weights {path}: {type(err).__name__}: {err}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict of autoencoder weights")
    # LDM's full checkpoints prefix the first stage with "first_stage_model."
    prefix = "first_stage_model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


class LatentCodec(nn.Module):
    """Images in [-1, 1] <-> scaled latents: z = scale * mean of q(z | x), x = decoder(z / scale).

    The posterior mean (not a sample) makes E_i deterministic, as the modality encoders of
    MT-Diffusion carry no randomness and no gradient.
    """

    def __init__(self, autoencoder, scale: float = DEFAULT_SCALE):
        super().__init__()
        self.autoencoder, self.scale = autoencoder, scale

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.scale * self.autoencoder.encode(x).latent_dist.mean

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z / self.scale).sample.clamp(-1, 1)


class PixelCodec(nn.Module):
    """The identity encoder: the diffusion space is pixel space (embedded profile)."""

    scale = 1.0

    def encode(self, x: Tensor) -> Tensor:
        return x

    def decode(self, z: Tensor) -> Tensor:
        return z.clamp(-1, 1)
