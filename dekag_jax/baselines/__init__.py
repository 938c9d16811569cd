"""Communication-centric baselines of the paper (Sec. VI-B1, Fig. 4, Fig. 13).

* ``jpeg_ldpc(image, phi, key, codec="jpeg"|"jpeg2000", headers="auto")``: compress at the largest
  quality that fits the AMC bit budget (below 256 x 256 pixels with JPEG headers agreed in advance,
  so only entropy-coded bytes travel), 5G LDPC + M-QAM over the OFDM channel, decode; an image
  that cannot be sent at all says so (``sent=False``).
* ``latent_ldpc(latent, phi, key)``: uniform quantisation with the largest bit depth that fits,
  same link, dequantise.

Both take phi as a :class:`dekag_jax.channel.condition.Condition` (or the tuple
``(tau, snr_db, delay_spread_s)``) and use ``dekag_jax.channel.amc`` (BLER <= 1%).
Command line: ``python -m dekag_jax.baselines --method jpeg-ldpc --images DIR --out DIR ...``.
"""
from .jpeg_ldpc import decode_bytes, encode_to_budget, jpeg_ldpc
from .latent_ldpc import dequantize, latent_ldpc, quantize

__all__ = ["jpeg_ldpc", "encode_to_budget", "decode_bytes", "latent_ldpc", "quantize", "dequantize"]
