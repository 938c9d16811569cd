"""Re-create the AMC table shipped as dekag_jax/channel/data/amc_table.json.

For every (SNR gamma, delay spread omega) grid point, Monte Carlo BLER of the 5G NR LDPC + M-QAM
schemes of dekag_jax.channel.amc over the paper's OFDM channel, tried in decreasing spectral
efficiency until the first one meets the BLER target (see the amc module docstring).

Search shortcut (documented in the table's meta): SNRs are processed from high to low per omega,
and the search at a lower SNR starts at the MCS selected at the next higher SNR, assuming the
BLER grows as the SNR falls (MCSs above it would fail again).

    python scripts/make_amc_table.py --blocks 300 --out dekag_jax/channel/data/amc_table.json
    python scripts/make_amc_table.py --blocks 2000 --batch 200     # the full-accuracy version
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import jax

from dekag_jax.channel import amc
from dekag_jax.channel.ofdm import OFDMConfig


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snr", type=float, nargs="+", default=[0, 5, 10, 15, 20], help="gamma grid [dB]")
    ap.add_argument("--delay-spread", type=float, nargs="+", default=[30e-9, 300e-9, 3000e-9],
                    help="omega grid [s]")
    ap.add_argument("--blocks", type=int, default=300, help="max codewords per (point, MCS)")
    ap.add_argument("--batch", type=int, default=100, help="codewords per jitted batch")
    ap.add_argument("--target", type=float, default=amc.TARGET_BLER)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(amc.__file__), "data", "amc_table.json"))
    args = ap.parse_args(argv)
    from dekag_jax import runtime
    runtime.setup()

    cfg = OFDMConfig(delay_spread_grid_s=tuple(args.delay_spread))
    mcs_list = amc.all_mcs()
    fns = {}
    points = []
    t0 = time.time()
    key = jax.random.key(args.seed)
    for wi, omega in enumerate(args.delay_spread):
        start = 0
        for snr in sorted(args.snr, reverse=True):
            chosen = None
            for i in range(start, len(mcs_list)):
                mcs = mcs_list[i]
                if mcs not in fns:
                    fns[mcs] = amc.bler_batch_fn(mcs, args.batch, cfg=cfg)
                k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, wi), int(snr * 100)), i)
                err, blk = amc.measure_bler(mcs, snr, omega, key=k, max_blocks=args.blocks,
                                            batch=args.batch, target=args.target, fn=fns[mcs])
                kk, nn = amc.codeword_shape(mcs)
                points.append(dict(snr_db=snr, delay_spread_s=omega, qam=mcs.qam_order,
                                   rate=f"{mcs.code_rate.numerator}/{mcs.code_rate.denominator}",
                                   k=kk, n=nn, errors=err, blocks=blk))
                print(f"[{time.time() - t0:7.1f}s] omega={omega * 1e9:g}ns snr={snr:g}dB {mcs.key:12s} "
                      f"BLER={err}/{blk}", flush=True)
                if err <= math.floor(args.target * args.blocks) and blk >= args.blocks:
                    chosen = i
                    break
            start = chosen if chosen is not None else len(mcs_list) - 1
    meta = dict(
        target_bler=args.target,
        symbols_per_codeword=amc.SYMBOLS_PER_CODEWORD,
        qam_orders=list(amc.QAM_ORDERS),
        code_rates=[f"{r.numerator}/{r.denominator}" for r in amc.CODE_RATES],
        code="5G NR LDPC (TS 38.212), rate matching rv0, bit interleaver for log2 M",
        decoder=amc.DECODER_KW,
        channel=dict(num_subchannels=cfg.num_subchannels, subcarrier_spacing_hz=cfg.subcarrier_spacing_hz,
                     channel=cfg.channel, equalizer=cfg.equalizer, demapper="max-log"),
        max_blocks_per_point=args.blocks,
        batch=args.batch,
        seed=args.seed,
        search="per omega: SNR descending; MCS in decreasing efficiency from the previous SNR's choice; "
               "stop at the first MCS with errors <= target*max_blocks over max_blocks blocks; "
               "early reject once errors exceed that",
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        created_by="scripts/make_amc_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        wall_seconds=round(time.time() - t0, 1),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, points=points), f, indent=1)
    print(f"wrote {args.out}: {len(points)} points in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
