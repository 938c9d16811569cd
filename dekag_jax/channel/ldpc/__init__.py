"""LDPC codes: 5G NR (TS 38.212, BG1/BG2, all lifting sizes, rate matching) and IEEE
802.11n (n = 648/1296/1944, R = 1/2..5/6); one systematic encoder and one batched min-sum
BP decoder (JAX) for both and for user codes read from ``alist`` files.

LLR convention: ``ln P(b=0)/P(b=1)`` (positive -> bit 0). Sionna's is the negative.

Typical use::

    from dekag_jax.channel.ldpc import NR5GCode
    code = NR5GCode(k=972, n=1944)
    c = code.encode(bits)                      # [B, 1944] uint8
    dec = code.decoder(cn_update="nms", schedule="layered", num_iter=20)
    u_hat = dec(llr)                           # [B, 972] uint8

    from dekag_jax.channel.ldpc import WifiCode, LDPCDecoder, read_alist
"""
from .codes import ParityCheck, from_dense, gf2_inv, gf2_rank, lift, read_alist, write_alist, syndrome
from .decoder import CN_UPDATES, SCHEDULES, DecodeResult, LDPCDecoder
from .encoder import LDPCEncoder
from .nr5g import NR5GCode, NR5GDecoder, base_graph, nr5g_parity_check, select_base_graph, select_lifting
from .wifi80211n import WifiCode, WifiDecoder, wifi_base_matrix, wifi_parity_check


class UserCode:
    """Any binary LDPC code given by its parity-check matrix (e.g. from ``read_alist``).

    ``encode(bits [B, k]) -> [B, n]`` (info bits at ``info_positions``),
    ``decode(llr [B, n]) -> [B, k]``.
    """

    def __init__(self, pc: ParityCheck):
        self.pcm = pc
        self.n = pc.n
        self._enc = LDPCEncoder(pc)
        self.k = self._enc.k
        self.info_positions = self._enc.info_positions

    @property
    def rate(self) -> float:
        return self.k / self.n

    def encode(self, bits):
        return self._enc(bits)

    def decoder(self, **kwargs):
        dec = LDPCDecoder(self.pcm, **kwargs)
        info = self.info_positions

        def run(llr):
            return dec(llr).bits[:, info]
        run.full = dec
        return run

    def decode(self, llr, **kwargs):
        return self.decoder(**kwargs)(llr)


__all__ = [
    "ParityCheck", "from_dense", "lift", "read_alist", "write_alist", "syndrome", "gf2_inv", "gf2_rank",
    "LDPCDecoder", "DecodeResult", "CN_UPDATES", "SCHEDULES", "LDPCEncoder",
    "NR5GCode", "NR5GDecoder", "base_graph", "nr5g_parity_check", "select_base_graph", "select_lifting",
    "WifiCode", "WifiDecoder", "wifi_base_matrix", "wifi_parity_check", "UserCode",
]
