"""Link-level condition sweep (no model): ``python -m dekag_jax.sweep --config CFG --out DIR``.

For every condition phi = (tau, gamma, omega) of the config grid it sends ``num_realizations``
transmissions of K = tau * X uniformly random M-QAM symbols over the channel of
``dekag_jax.channel.ofdm`` (one channel draw each) and measures:

    ser, ber          uncoded symbol / bit error rate (ML decision given perfect CSI; Gray bits)
    ser_std_tx        standard deviation over transmissions of the per-transmission SER: the
                      frequency diversity within one transmission, which is what omega changes
                      (small omega: nearly flat h over the J sub-channels, large spread)
    mse_db            10 log10 mean |received - s|^2 of the (biased) MMSE output: the symbol
                      distortion a JSCC decoder sees
    post_eq_snr_db    mean over symbols of 10 log10(P_s / noise_var_eff)
    ser_theory        exact SER for this SNR averaged over Rayleigh fading (AWGN for channel=awgn;
                      empty with imperfect CSI) - every sub-channel of eq. 3 is Rayleigh, so the
                      measured SER must match it whatever omega (omega changes the spread only)

Realisations are sharded over all devices of a 1-D ``jax.sharding.Mesh`` (NamedSharding). The
random numbers of realisation r of a condition depend only on (seed, condition, r), so results do
not depend on the device count or on the rest of the grid.

Outputs in ``--out``: ``points/<condition>.json`` (one per finished condition: the resume log),
``results.csv``, ``results.json``, ``results.png``. Re-running with the same ``--out`` skips the
finished conditions; a finished point made with different settings (M, X, realisations, seed,
channel) is an error rather than silently mixed in.

Config files are python files with ``get_config()`` returning a locked ``ConfigDict``
(``configs/sweep_default.py``, ``configs/sweep_smoke.py``); override fields with
``--config.snrs_db='(0.,10.)'`` etc. ``--max_points N`` stops after N new conditions (budgeted runs).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Optional

import numpy as np

CSV_FIELDS = ("tau", "K", "snr_db", "delay_spread_ns", "num_realizations", "num_symbols",
              "sym_errors", "bit_errors", "ser", "ser_std_tx", "ber", "mse_db", "post_eq_snr_db",
              "ser_theory")
SCHEMA = 2  # bump when the per-point result fields change (old points then refuse to mix)


@dataclasses.dataclass
class SweepResult:
    rows: list            # one dict per condition (CSV_FIELDS), grid order
    computed: list        # condition keys computed in this call
    reused: list          # condition keys loaded from points/
    complete: bool        # all grid points finished (tables and plot written)


# ----------------------------------------------------------------------------- config
def _ofdm_config(config):
    from dekag_jax.channel import OFDMConfig
    ch = config.channel
    from dekag_jax.channel.condition import ns_to_s
    grid = tuple(ns_to_s(w) for w in config.delay_spreads_ns)
    return OFDMConfig(num_subchannels=int(ch.num_subchannels),
                      subcarrier_spacing_hz=float(ch.subcarrier_spacing_hz),
                      channel=str(ch.channel), equalizer=str(ch.equalizer),
                      csi_error_var=float(ch.csi_error_var),
                      delay_spread_grid_s=grid, snr_in_db=True)


def _parse_taus(taus):
    from dekag_jax.channel.montecarlo import check_rate
    items = taus.split(",") if isinstance(taus, str) else list(taus)
    items = [t for t in items if str(t).strip() != ""]
    if not items:
        raise ValueError("config.taus is empty")
    return [check_rate(t) for t in items]


def conditions(config):
    """The grid of ``Condition``s of a sweep config, in tau-major order (validates all fields)."""
    from dekag_jax.channel.condition import delay_spread_unit_hint, ns_to_s
    from dekag_jax.channel.montecarlo import Condition, num_symbols
    from dekag_jax.channel.qam import check_m
    check_m(config.M)
    taus = _parse_taus(config.taus)
    for t in taus:
        num_symbols(t, int(config.num_pixels))
    if int(config.num_realizations) < 1:
        raise ValueError(f"num_realizations={config.num_realizations} must be >= 1")
    if int(config.batch) < 1:
        raise ValueError(f"batch={config.batch} must be >= 1")
    for w in config.delay_spreads_ns:
        w = float(w)
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"delay spread omega={w:g} ns must be finite and > 0")
        if w < 0.1:  # a value in seconds written into the ns field
            raise ValueError(f"delay spread omega={w:g} ns is implausible (< 0.1 ns); "
                             f"{delay_spread_unit_hint(w, 'ns')}")
    _ofdm_config(config)  # validates channel fields and omegas
    return [Condition(t, float(g), ns_to_s(w))
            for t in taus for g in config.snrs_db for w in config.delay_spreads_ns]


def fingerprint(config) -> dict:
    """Settings that, together with the condition, determine a point's result."""
    cfg = _ofdm_config(config)
    return dict(schema=SCHEMA, M=int(config.M), num_pixels=int(config.num_pixels),
                num_realizations=int(config.num_realizations), seed=int(config.seed),
                num_subchannels=cfg.num_subchannels,
                subcarrier_spacing_hz=cfg.subcarrier_spacing_hz, channel=cfg.channel,
                equalizer=cfg.equalizer, csi_error_var=cfg.csi_error_var,
                channel_power=cfg.channel_power, signal_power=cfg.signal_power)


# ----------------------------------------------------------------------------- compute
@functools.lru_cache(maxsize=None)
def _row_fn(seed: int, K: int, M: int, cfg, sharding):
    import jax
    from dekag_jax.channel.montecarlo import uncoded_row_stats

    def f(cids, rs, snr, omega):
        base = jax.random.key(seed)
        keys = jax.vmap(lambda c, r: jax.random.fold_in(jax.random.fold_in(base, c), r))(cids, rs)
        return uncoded_row_stats(keys, snr, omega, K=K, M=M, cfg=cfg)

    return jax.jit(f, in_shardings=(sharding,) * 4, out_shardings=sharding)


def _theory(cond, config, cfg):
    from dekag_jax.channel.montecarlo import ser_rayleigh_theory
    from dekag_jax.channel.qam import ser_awgn_theory
    if cfg.csi_error_var > 0:
        return None
    g = 10.0 ** (cond.snr_db / 10.0)
    if cfg.channel == "awgn":
        return float(ser_awgn_theory(int(config.M), np.float64(g)))
    return ser_rayleigh_theory(int(config.M), g * cfg.signal_power, cfg.channel_power)


def _atomic_write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def run_sweep(config, out_dir: str, *, mesh=None, progress: bool = True,
              max_points: Optional[int] = None) -> SweepResult:
    """Run (or resume) the sweep of ``config`` into ``out_dir``. See the module docstring."""
    from dekag_jax import parallel
    from dekag_jax.channel.montecarlo import condition_id, num_symbols

    conds = conditions(config)
    cfg = _ofdm_config(config)
    fp = fingerprint(config)
    main = parallel.is_main_process()
    pdir = os.path.join(out_dir, "points")
    os.makedirs(pdir, exist_ok=True)

    done, reused = {}, []
    for c in conds:
        p = os.path.join(pdir, c.key + ".json")
        if os.path.exists(p):
            with open(p) as fh:
                rec = json.load(fh)
            if rec.get("fingerprint") != fp:
                raise ValueError(
                    f"{p} was computed with settings {rec.get('fingerprint')} but this sweep uses "
                    f"{fp}; use another --out or delete the stale point")
            done[c.key] = rec["result"]
            reused.append(c.key)
    pending = [c for c in conds if c.key not in done]
    if max_points is not None:
        pending = pending[:max(int(max_points), 0)]

    mesh = mesh or parallel.make_mesh()
    ndev = mesh.shape[parallel.DATA_AXIS]
    sharding = parallel.data_sharding(mesh)
    B = parallel.pad_to_multiple(int(config.batch), ndev)
    R = int(config.num_realizations)
    X = int(config.num_pixels)
    M = int(config.M)
    computed = []

    bar = None
    if progress and main and pending:
        from tqdm import tqdm
        bar = tqdm(total=len(pending) * R, unit="tx", desc="sweep", file=sys.stderr)

    by_tau = {}
    for c in pending:
        by_tau.setdefault(c.tau, []).append(c)
    for tau, group in by_tau.items():
        K = num_symbols(tau, X)
        fn = _row_fn(int(config.seed), K, M, cfg, sharding)
        # rows = (point index in group, realisation); chunks of B rows may span points
        pidx = np.repeat(np.arange(len(group)), R)
        ridx = np.tile(np.arange(R, dtype=np.uint32), len(group))
        cid = np.array([condition_id(c) for c in group], np.uint32)[pidx]
        snr = np.array([c.snr_db for c in group], np.float32)[pidx]
        om = np.array([c.delay_spread_s for c in group], np.float32)[pidx]
        acc = {k: np.zeros(len(group), np.float64)
               for k in ("sym_err", "bit_err", "sse", "snr_post_db", "ser_sq")}
        remaining = np.full(len(group), R)
        n = len(pidx)
        for start in range(0, n, B):
            sl = np.arange(start, start + B)
            sl = np.minimum(sl, n - 1)  # pad the last chunk by repeating its last row
            valid = np.arange(start, start + B) < n
            out = fn(*parallel.shard_batch((cid[sl], ridx[sl], snr[sl], om[sl]), mesh))
            out = parallel.to_host(out)
            pv = pidx[sl][valid]
            out = dict(out, ser_sq=(np.asarray(out["sym_err"], np.float64) / K) ** 2)
            for k in acc:
                np.add.at(acc[k], pv, np.asarray(out[k], np.float64)[valid])
            np.subtract.at(remaining, pv, 1)
            if bar is not None:
                bar.update(int(valid.sum()))
            for i in np.unique(pv):
                if remaining[i] == 0:
                    c = group[i]
                    nsym = R * K
                    res = dict(
                        tau=f"{(c.tau * 64).numerator}/64", K=K, snr_db=c.snr_db,
                        delay_spread_ns=round(c.delay_spread_s * 1e9, 6), num_realizations=R,
                        num_symbols=nsym, sym_errors=int(acc["sym_err"][i]),
                        bit_errors=int(acc["bit_err"][i]),
                        ser=acc["sym_err"][i] / nsym,
                        ser_std_tx=math.sqrt(max(acc["ser_sq"][i] / R
                                                 - (acc["sym_err"][i] / nsym) ** 2, 0.0)),
                        ber=acc["bit_err"][i] / (nsym * int(math.log2(M))),
                        mse_db=10.0 * math.log10(max(acc["sse"][i] / nsym, 1e-300)),
                        post_eq_snr_db=acc["snr_post_db"][i] / R,
                        ser_theory=_theory(c, config, cfg))
                    done[c.key] = res
                    computed.append(c.key)
                    if main:
                        _atomic_write(os.path.join(pdir, c.key + ".json"), json.dumps(
                            dict(condition=c.key, fingerprint=fp, result=res), indent=1))
    if bar is not None:
        bar.close()

    rows = [done[c.key] for c in conds if c.key in done]
    complete = len(rows) == len(conds)
    if complete and main:
        write_tables(rows, config, fp, out_dir)
    return SweepResult(rows=rows, computed=computed, reused=reused, complete=complete)


# ----------------------------------------------------------------------------- outputs
def write_tables(rows, config, fp, out_dir):
    """results.csv, results.json and results.png from the per-condition rows."""
    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in CSV_FIELDS})
    _atomic_write(os.path.join(out_dir, "results.json"), json.dumps(
        dict(config=json.loads(config.to_json()), fingerprint=fp, results=rows), indent=1))
    plot(rows, os.path.join(out_dir, "results.png"))


def plot(rows, path):
    """SER, BER, SER spread and MMSE-output MSE vs gamma, one line per omega, largest tau."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from fractions import Fraction

    tmax = max(rows, key=lambda r: Fraction(r["tau"]))["tau"]
    sel = [r for r in rows if r["tau"] == tmax]
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.2))
    for i, w in enumerate(sorted({r["delay_spread_ns"] for r in sel})):
        rr = sorted((r for r in sel if r["delay_spread_ns"] == w), key=lambda r: r["snr_db"])
        g = [r["snr_db"] for r in rr]
        col = f"C{i}"
        ax[0].semilogy(g, [max(r["ser"], 1e-12) for r in rr], "o-", c=col, label=f"ω={w:g} ns")
        ax[1].semilogy(g, [max(r["ber"], 1e-12) for r in rr], "o-", c=col, label=f"ω={w:g} ns")
        ax[2].plot(g, [r["ser_std_tx"] for r in rr], "o-", c=col, label=f"ω={w:g} ns")
        ax[3].plot(g, [r["mse_db"] for r in rr], "o-", c=col, label=f"ω={w:g} ns")
        if i == 0 and all(r["ser_theory"] is not None for r in rr):
            ax[0].semilogy(g, [r["ser_theory"] for r in rr], "k--", label="theory")
    names = ("uncoded SER", "uncoded BER", "std over transmissions of SER",
             "MMSE output MSE [dB]")
    for a, name in zip(ax, names):
        a.set_xlabel("γ = P_h/P_δ [dB]")
        a.set_title(name)
        a.grid(True, which="both", alpha=0.3)
        a.legend()
    fig.suptitle(f"τ={tmax}, K={sel[0]['K']}, {sel[0]['num_realizations']} transmissions/point")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
_USAGE = """python -m dekag_jax.sweep --config CFG.py --out DIR [--config.FIELD=VALUE ...]
                          [--max_points N] [--noprogress] [--debug]"""


def _parse_args(argv):
    """Validate the command line and the config before any work (UsageError, one line)."""
    from dekag_jax.errors import UsageError, parse_config_flags

    def define(flags, fv):
        flags.DEFINE_string("out", None, "output directory (resumed if it exists)", flag_values=fv)
        flags.DEFINE_integer("max_points", None, "stop after this many new conditions", flag_values=fv)
        flags.DEFINE_bool("progress", True, "show a tqdm progress bar", flag_values=fv)

    fv, config, path = parse_config_flags(argv, prog="sweep", what="sweep config",
                                          example="configs/sweep_default.py", define=define,
                                          usage=_USAGE, doc=__doc__)
    if fv.out is None:
        raise UsageError("--out is required (the output folder)")
    if fv.max_points is not None and fv.max_points < 0:
        raise UsageError(f"--max_points={fv.max_points} must be >= 0")
    try:
        conditions(config)  # rates in {1..6}/64, delay spreads > 0, M, channel fields, ...
    except (ValueError, TypeError) as e:
        raise UsageError(f"config {path}: {e}") from None
    return fv, config


def main(argv=None):
    """``python -m dekag_jax.sweep``: validates everything (``--help`` works; one-line errors,
    exit 2), then sets up the runtime and runs. ``argv`` excludes the program name."""
    from dekag_jax.errors import prepare_output_dir, remove_if_empty

    argv = list(sys.argv[1:] if argv is None else argv)
    fv, config = _parse_args(argv)
    created = prepare_output_dir(fv.out)
    points = os.path.join(fv.out, "points")
    new_points = [] if os.path.isdir(points) else [points]

    from dekag_jax import parallel, runtime
    try:
        runtime.setup()
        import jax
        t0 = time.time()
        res = run_sweep(config, fv.out, progress=fv.progress, max_points=fv.max_points)
    except BaseException:  # leave no empty folder behind (finished points stay: resumable)
        remove_if_empty(created + new_points)  # innermost first; stops at the first non-empty
        raise
    if parallel.is_main_process():
        print(f"devices: {jax.device_count()} ({jax.devices()[0].platform}); computed "
              f"{len(res.computed)} points, reused {len(res.reused)}, "
              f"{'complete' if res.complete else 'INCOMPLETE'} in {time.time() - t0:.1f} s")
        if res.complete:
            print(f"wrote {os.path.join(fv.out, 'results.csv')} (+ .json, .png)")
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main
    sys.exit(cli_main(main))
