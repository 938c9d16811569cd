"""Diffusion: noise schedules and the eq. 1 training loss (``schedules``), the DDIM sampler with
classifier-free guidance (``ddim``), and text -> latents -> images with a loaded pipeline
(``generate``). Submodules are imported explicitly, e.g. ``from dekag_jax.diffusion import ddim``.
"""
