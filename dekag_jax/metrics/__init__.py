"""Image-quality and consistency metrics (PSNR here; DINO/CLIP scores and FID land with G-KA)."""
from dekag_jax.metrics.image import psnr

__all__ = ["psnr"]
