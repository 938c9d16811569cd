"""Parameter counts of the JSCC codec Theta_J with its shared latent decoder (paper Sec. VI-A2).

The paper's codec is "approximately 50.5 million parameters"; we read that as f_JE + latent
reconstructor (about 1 M, ``JSCCConfig.paper()``) plus SD's VAE decoder reused as the latent decoder
(49.49 M with its post_quant_conv). Counts come from ``jax.eval_shape``: nothing is initialised.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from dekag_jax.models.jscc import JSCCCodec, JSCCConfig
from dekag_jax.models.vae import AutoencoderKL, VAEConfig

__all__ = ["SD_VAE_CONFIG", "count", "codec_param_counts"]

# Stable Diffusion 1.x/2.x AutoencoderKL (the latent decoder of the paper's edge-GAI).
SD_VAE_CONFIG = VAEConfig(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
                          sample_size=512)


def count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def codec_param_counts(config: JSCCConfig, vae_config: VAEConfig, latent_hw: tuple[int, int]) -> dict:
    """``{"jscc_encoder", "latent_reconstructor", "latent_decoder", "total", "vae_total", "latent_hw"}``:
    counts of f_JE, the reconstructor, the shared latent decoder (VAE decoder + post_quant_conv),
    their sum (the codec as the paper counts it) and the whole VAE."""
    h, w = latent_hw
    codec = JSCCCodec(config=config)
    z = jax.ShapeDtypeStruct((1, h, w, config.latent_channels), jnp.float32)
    p = jax.eval_shape(lambda z: codec.init(jax.random.key(0), z), z)["params"]
    vae = AutoencoderKL(config=vae_config)
    f = 2 ** (len(vae_config.block_out_channels) - 1)
    x = jax.ShapeDtypeStruct((1, f, f, vae_config.in_channels), jnp.float32)
    vp = jax.eval_shape(lambda x: vae.init(jax.random.key(0), x, jax.random.key(1)), x)["params"]
    dec = count(vp["decoder"]) + count(vp.get("post_quant_conv", {}))
    enc, rec = count(p["jscc_encoder"]), count(p["latent_reconstructor"])
    return {"jscc_encoder": enc, "latent_reconstructor": rec, "latent_decoder": dec, "total": enc + rec + dec,
            "vae_total": count(vp), "latent_hw": [h, w]}
