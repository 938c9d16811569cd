"""Parameter counts of the JSCC codec (paper size and tiny), beside the shared latent decoder.

Paper Sec. VI-A2: the JSCC codec "comprises approximately 50.5 million parameters". Our reading:
f_JE + latent reconstructor (about 1 M) plus the latent decoder reused from SD's VAE (49.5 M);
the whole SD VAE (encoder included) is 83.6 M. Counts come from abstract shapes (``jax.eval_shape``):
nothing is downloaded or initialised.

    python scripts/jscc_counts.py            # table + JSON on the last line
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> dict:
    from dekag_jax import runtime

    runtime.setup(compilation_cache=False)
    from dekag_jax.ka.counts import SD_VAE_CONFIG, codec_param_counts
    from dekag_jax.models.jscc import JSCCConfig
    from dekag_jax.models.vae import VAEConfig
    from dekag_jax.world.models import edge_pipeline_dir

    with open(os.path.join(edge_pipeline_dir(), "vae", "config.json")) as f:
        tiny_vae = VAEConfig.from_hf(json.load(f))
    out = {"paper": codec_param_counts(JSCCConfig.paper(), SD_VAE_CONFIG, (64, 64)),
           "tiny": codec_param_counts(JSCCConfig.tiny(), tiny_vae, (8, 8))}
    for size, c in out.items():
        print(f"{size:6s} latents {c['latent_hw'][0]}x{c['latent_hw'][1]}x4: f_JE {c['jscc_encoder'] / 1e6:.3f} M, "
              f"latent reconstructor {c['latent_reconstructor'] / 1e6:.3f} M, latent decoder (shared VAE decoder"
              f" + post_quant_conv) {c['latent_decoder'] / 1e6:.3f} M, codec in all {c['total'] / 1e6:.3f} M "
              f"(whole VAE {c['vae_total'] / 1e6:.3f} M)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
