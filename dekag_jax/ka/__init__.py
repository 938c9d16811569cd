"""Transmission knowledge alignment (T-KA, paper Sec. II-B, IV-A, V-B): the JSCC codec composed with the
link (:mod:`dekag_jax.ka.transmission`), the eq. 4 objective (:mod:`dekag_jax.ka.objective`) and
parameter accounting (:mod:`dekag_jax.ka.counts`).

Layering: ``ka`` may import ``models``, ``channel``, ``diffusion``, ``adapt`` and ``metrics``, never the
entry points (``train``, ``evaluate``, ``report``, ``sweep``).
"""
