"""dekag_jax: JAX/Flax implementation of DeKA-g (Hu & Li), distillation-enabled knowledge
alignment for generative semantic communications of AIGC images.

Layers (one folder each, imports only point down this list):
    channel/    QAM, OFDM (eq. 2-3), AWGN, LDPC, AMC, Monte Carlo      (no model code)
    weights/    safetensors reading, strict PyTorch <-> Flax conversion
    models/     UNet, VAE, CLIP text encoder + tokenizer, ViT judges, JSCC codec
    diffusion/  noise schedules (eq. 1), DDIM sampler with guidance
    world/      the tiny world: renderer, subjects, splits, shipped edge pipeline
    baselines/  JPEG-LDPC, Latent-LDPC
Importing the package imports none of them, so ``import dekag_jax.channel`` pulls in no UNet.
"""
__version__ = "0.1.0"
