"""Run a communication baseline over a folder of images (or latents).

    python -m dekag_jax.baselines --method jpeg-ldpc --images DIR --out DIR \
        --snr 10 --delay-spread 3000e-9 --rate 2/64

Methods: ``jpeg-ldpc``, ``jpeg2000-ldpc`` (inputs: PNG/JPEG/BMP/WebP images, RGB) and
``latent-ldpc`` (inputs: ``.npy`` latents ``[h, w, c]``; outputs received ``.npy`` latents;
turning them into images needs the VAE decoder, see dekag_jax.models). Writes the received
files into ``--out`` and ``results.csv`` there (PSNR in dB for images, MSE for latents, payload
size, MCS, block errors). The JAX persistent compilation cache is enabled so a second run does
not recompile the LDPC decoder.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np

_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m dekag_jax.baselines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=["jpeg-ldpc", "jpeg2000-ldpc", "latent-ldpc"])
    ap.add_argument("--images", help="input folder of images (jpeg methods)")
    ap.add_argument("--latents", help="input folder of .npy latents [h, w, c] (latent-ldpc)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--snr", type=float, required=True, help="gamma in dB")
    ap.add_argument("--delay-spread", type=float, required=True, help="omega in seconds, e.g. 3000e-9")
    ap.add_argument("--rate", required=True, help="tau, symbols per pixel, e.g. 2/64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amc-table", default=None, help="AMC table JSON (default: the shipped one)")
    ap.add_argument("--pixels-per-element", type=int, default=64, help="latent-ldpc: pixels per latent position")
    args = ap.parse_args(argv)

    import jax
    from PIL import Image
    from tqdm import tqdm

    from .. import runtime
    runtime.setup()
    from ..channel import amc
    from ..metrics import psnr
    from .jpeg_ldpc import jpeg_ldpc
    from .latent_ldpc import latent_ldpc

    table = amc.load_table(args.amc_table)
    src = args.latents if args.method == "latent-ldpc" else args.images
    if not src:
        ap.error("--latents is required for latent-ldpc" if args.method == "latent-ldpc"
                 else "--images is required for the jpeg methods")
    if not os.path.isdir(src):
        ap.error(f"input folder {src!r} does not exist")
    exts = (".npy",) if args.method == "latent-ldpc" else _IMG_EXT
    files = sorted(f for f in os.listdir(src) if f.lower().endswith(exts))
    if not files:
        ap.error(f"no {'/'.join(exts)} files in {src!r}")
    os.makedirs(args.out, exist_ok=True)
    phi = (args.rate, args.snr, args.delay_spread)
    key = jax.random.key(args.seed)
    rows = []
    for i, name in enumerate(tqdm(files, desc=args.method, unit="file")):
        k = jax.random.fold_in(key, i)
        path = os.path.join(src, name)
        if args.method == "latent-ldpc":
            z = np.load(path, allow_pickle=False)
            r = latent_ldpc(z, phi, k, pixels_per_element=args.pixels_per_element, table=table)
            np.save(os.path.join(args.out, name), r["latent"])
            quality = dict(mse=float(np.mean((r["latent"] - z) ** 2)), bits_per_element=r["bits_per_element"],
                           pool=r["pool"], payload_bits=r["payload_bits"])
        else:
            img = np.asarray(Image.open(path).convert("RGB"), np.uint8)
            r = jpeg_ldpc(img, phi, k, codec="jpeg2000" if args.method == "jpeg2000-ldpc" else "jpeg",
                          table=table)
            stem = os.path.splitext(name)[0]
            Image.fromarray(r["image"]).save(os.path.join(args.out, stem + ".png"))
            quality = dict(psnr_db=float(psnr(img.astype(np.float32), r["image"].astype(np.float32),
                                              data_range=255.0)),
                           bytes=r["bytes"], quality=r["quality"], scale=r["scale"],
                           decode_failed=r["decode_failed"])
        pl = r["plan"]
        rows.append(dict(file=name, **quality, mcs=pl.mcs.key, info_bits=pl.info_bits,
                         table_bler=pl.bler, meets_target=pl.meets_target,
                         num_codewords=r["num_codewords"], block_errors=r["block_errors"],
                         bit_errors=r["bit_errors"]))
    with open(os.path.join(args.out, "results.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    key_metric = "mse" if args.method == "latent-ldpc" else "psnr_db"
    vals = np.array([r[key_metric] for r in rows], float)
    print(f"{len(rows)} files -> {args.out}; mean {key_metric} = {np.mean(vals):.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
