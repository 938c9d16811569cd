"""Link-level physical layer: QAM, correlated OFDM channel (eq. 2-3), SNR helpers, Monte Carlo.

``import dekag_jax.channel`` imports no model code (no UNet/VAE/flax modules).

Sign convention for LLRs everywhere in this package: LLR = ln P(b=0|y) / P(b=1|y)
(Sionna uses the opposite sign; convert with ``to_sionna_llr`` / ``from_sionna_llr``).

Submodules:
    qam         square M-QAM (Gray, 3GPP labelling), hard/LLR demapping, JSCC quantiser
    ofdm        OFDMConfig, covariance/factor of eq. 3, ``transmit`` (channel + AWGN + equaliser)
    snr         the Eb/N0 <-> N0 helper and dB conversions
    condition   Condition = phi (tau, gamma, omega): the one condition type, unit parsing, Phi_EU
    montecarlo  jitted (key, phi, payload) -> received chain, vmapped over conditions
    ldpc, amc   LDPC codes and adaptive modulation and coding (import them explicitly)
"""
from . import qam, ofdm, snr, condition, montecarlo
from .condition import (
    ConditionError, as_condition, parse_rate, parse_snr_db, parse_delay_spread, phi_eu_grid, phi_array,
)
from .qam import (
    SUPPORTED_M, bits_per_symbol, check_m, constellation, bits_to_symbols, symbols_to_indices,
    indices_to_bits, hard_demap, nearest_point, llr_maxlog, llr_exact, demap_llr, to_sionna_llr,
    from_sionna_llr, normalize_power, real_to_complex, complex_to_real, quantize,
    constellation_loss, ser_awgn_theory,
)
from .ofdm import (
    OFDMConfig, covariance, channel_factor, factor_table, check_on_grid, sample_channel,
    per_symbol_gain, transmit, equalized_llr,
)
from .snr import (
    db_to_linear, linear_to_db, ebno_db_to_n0, n0_to_ebno_db, esno_db_to_n0, n0_to_esno_db,
    ebno_db_to_esno_db, esno_db_to_ebno_db,
)
from .montecarlo import (
    RATES, DEFAULT_NUM_PIXELS, Condition, check_rate, num_symbols, link, make_link,
    uncoded_row_stats, ser_rayleigh_theory,
)
