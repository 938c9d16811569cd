"""dekag_jax: JAX/Flax implementation of DeKA-g (Hu & Li), distillation-enabled knowledge
alignment for generative semantic communications of AIGC images.

Layers (one folder each; what each may import is enforced by tests/test_layers.py, whose
docstring holds the full table):
    channel/    QAM, OFDM (eq. 2-3), AWGN, LDPC, AMC, Monte Carlo      (no model code)
    models/     UNet, VAE, CLIP text encoder + tokenizer, ViT judges (pure Flax, NHWC)
    weights/    safetensors reading, strict PyTorch <-> Flax conversion, pipeline loading
    diffusion/  noise schedules (eq. 1), DDIM sampler with guidance, text-to-latents (no models/)
    metrics/    PSNR, eq. 5's DINO/CLIP scores, FID, KID over feature functions (no model code)
    adapt/      LoRA / CALA by parameter path, metaword (no models/)
    ka/         T-KA and G-KA (no entry points)
    world/      the tiny world: renderer, subjects, splits, shipped edge pipeline and judges
    baselines/  JPEG-LDPC, Latent-LDPC (channel/ and metrics/ only)
Shared by all: errors.py, runtime.py (the one runtime setup), parallel.py, perf.py.
Importing the package imports none of them, so ``import dekag_jax.channel`` pulls in no UNet.
"""
__version__ = "0.1.0"
