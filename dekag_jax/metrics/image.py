"""Pixel-level image metrics. Pure jnp (or numpy) functions, batched over leading axes."""
from __future__ import annotations

import jax.numpy as jnp


def psnr(x, y, *, data_range: float = 1.0, axis=(-3, -2, -1)):
    """Peak signal-to-noise ratio in dB, per image.

    Args:
      x, y: images ``[..., H, W, C]`` of the same shape, in ``[0, data_range]`` (e.g. 1.0 for floats,
        255 for uint8 values; integer inputs are cast to float32 first).
      data_range: peak value.
      axis: the axes averaged into one MSE (default: the last three, one PSNR per image).
    Returns: ``[...]`` float32; ``inf`` where the images are identical.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    if x.shape != y.shape:
        raise ValueError(f"psnr: image shapes differ: {x.shape} vs {y.shape}")
    mse = jnp.mean((x - y) ** 2, axis=axis)
    return 10.0 * jnp.log10(data_range**2 / mse)
