"""Modules that ``scripts/mutate.py`` mutates, each with the fast tests that must kill its mutants.

    python scripts/mutate.py --config configs/mutate.py                       # all modules
    python scripts/mutate.py --config configs/mutate.py --only qam,decoder    # some
    python scripts/mutate.py --config configs/mutate.py --config.max_mutants=0  # every mutant

Test files (or pytest node ids) are listed fastest-killing first: each mutant runs them with ``-x`` (stop at the first
failure), so the order sets the cost. Add a module here when it becomes critical (adapt, the
codec): a name, its path, its tests.
"""
import ml_collections


def _m(path, *tests):
    return ml_collections.ConfigDict(dict(path=path, tests=",".join(tests)))


def _ldpc(*names):
    # test_ldpc.py's waterfalls take minutes on a busy CPU: mutants run its fast tests only.
    return [f"tests/test_ldpc.py::test_{n}" for n in names]


def get_config():
    c = ml_collections.ConfigDict()
    c.modules = ml_collections.ConfigDict(dict(
        qam=_m("dekag_jax/channel/qam.py", "tests/test_qam.py", "tests/test_llr_bruteforce.py"),
        ofdm=_m("dekag_jax/channel/ofdm.py", "tests/test_channel_edges.py", "tests/test_llr_bruteforce.py",
                "tests/test_ofdm.py",
                "tests/test_sweep_stats.py"),
        montecarlo=_m("dekag_jax/channel/montecarlo.py", "tests/test_channel_edges.py", "tests/test_sweep_stats.py",
                      "tests/test_ofdm.py"),
        decoder=_m("dekag_jax/channel/ldpc/decoder.py", "tests/test_ldpc_checknode.py",
                   *_ldpc("decoder_noiseless_and_early_stop", "single_bit_errors_corrected_exhaustively_wifi",
                          "bad_inputs_raise_clear_errors")),
        encoder=_m("dekag_jax/channel/ldpc/encoder.py",
                   *_ldpc("generic_encoder_on_random_code_with_redundant_rows", "wifi_all_codes_are_codes",
                          "5g_every_lifting_set_gives_codewords", "gf2_inv", "bad_inputs_raise_clear_errors")),
        codes=_m("dekag_jax/channel/ldpc/codes.py",
                 *_ldpc("alist_roundtrip", "gf2_inv", "generic_encoder_on_random_code_with_redundant_rows",
                        "wifi_all_codes_are_codes", "base_graph_tables_match_the_standard_shape"),
                 "tests/test_ldpc_checknode.py"),
        image=_m("dekag_jax/metrics/image.py", "tests/test_metrics.py"),
        consistency=_m("dekag_jax/metrics/consistency.py", "tests/test_consistency.py",
                       "tests/test_world_gates.py"),
        fid=_m("dekag_jax/metrics/fid.py", "tests/test_fid.py"),
    ))
    c.max_mutants = 40          # per module, sampled with `seed`; 0 = all
    c.seed = 0
    c.timeout_s = 240.0         # per mutant; a mutant that times out counts as killed (reported)
    c.fork = True               # fork a pre-imported server per mutant (saves the jax import)
    c.preload = "numpy,scipy.stats,scipy.integrate,jax,jax.numpy,flax.linen,pytest"
    c.lock()
    return c
