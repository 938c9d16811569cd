"""dekag_jax: JAX/Flax implementation of DeKA-g (Hu & Li), distillation-enabled knowledge
alignment for generative semantic communications of AIGC images.

Layers (one folder each; a layer imports only from layers above it in this list):
    channel/    QAM, OFDM (eq. 2-3), AWGN, LDPC, AMC, Monte Carlo      (no model code)
    models/     UNet, VAE, CLIP text encoder + tokenizer, ViT judges (pure Flax, NHWC)
    weights/    safetensors reading, strict PyTorch <-> Flax conversion, pipeline loading
    diffusion/  noise schedules (eq. 1), DDIM sampler with guidance, text-to-latents
    world/      the tiny world: renderer, subjects, splits, shipped edge pipeline and judges
    baselines/  JPEG-LDPC, Latent-LDPC (channel/ only)
Importing the package imports none of them, so ``import dekag_jax.channel`` pulls in no UNet.
"""
__version__ = "0.1.0"
