r"""Run a communication baseline over a folder of images (or latents).

    python -m dekag_jax.baselines --method jpeg-ldpc --images DIR --out DIR \
        --snr 10dB --delay-spread 3000ns --rate 2/64

Methods: ``jpeg-ldpc``, ``jpeg2000-ldpc`` (inputs: PNG/JPEG/BMP/WebP images, RGB) and
``latent-ldpc`` (inputs: ``.npy`` latents ``[h, w, c]``; outputs received ``.npy`` latents;
turning them into images needs the VAE decoder, see dekag_jax.models). Writes the received
files into ``--out`` and ``results.csv`` there (PSNR in dB for images, MSE for latents, payload
size, header mode, MCS, block errors). An image whose payload cannot fit the bit budget at all
is not sent: its row says ``sent=False`` with no PSNR, and the summary counts it.

JPEG headers (``--headers``): ``auto`` (default) agrees on the JPEG headers in advance below
256 x 256 pixels (the tiny world's 64 x 64: only the entropy-coded bytes travel) and sends whole
files from 256 x 256 up (the paper's 512 x 512); see ``dekag_jax.baselines.jpeg_ldpc``.

Units: ``--snr`` in dB (``10`` or ``10dB``); ``--delay-spread`` with a unit (``3000ns``,
``3us``, ``3e-6s``; a bare number is seconds, and an implausible one such as ``3000`` is
refused with a hint); ``--rate`` as ``i/64``. Bad arguments print one line and exit with
status 2 before any work; ``--debug`` shows tracebacks.
"""
from __future__ import annotations

import csv
import os
import sys

import numpy as np

from ..channel.condition import parse_delay_spread, parse_rate, parse_snr_db
from ..errors import ArgumentParser, UsageError, arg_type, cli_main, prepare_output_dir, remove_if_empty

_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_METHODS = ("jpeg-ldpc", "jpeg2000-ldpc", "latent-ldpc")


def _parser() -> ArgumentParser:
    import argparse
    ap = ArgumentParser(prog="python -m dekag_jax.baselines", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=_METHODS)
    ap.add_argument("--images", help="input folder of images (jpeg methods)")
    ap.add_argument("--latents", help="input folder of .npy latents [h, w, c] (latent-ldpc)")
    ap.add_argument("--out", required=True, help="output folder (created; must be writable)")
    ap.add_argument("--snr", type=arg_type(parse_snr_db, "SNR"), required=True,
                    help="gamma in dB, e.g. 10 or 10dB")
    ap.add_argument("--delay-spread", type=arg_type(parse_delay_spread, "delay spread"),
                    required=True, help="omega with a unit: 3000ns, 3us, 3e-6s (bare number: s)")
    ap.add_argument("--rate", type=arg_type(parse_rate, "rate"), required=True,
                    help="tau, symbols per pixel: 1/64 .. 6/64")
    ap.add_argument("--headers", default="auto", choices=("auto", "in-band", "agreed"),
                    help="JPEG headers sent in-band or agreed in advance (default: by image size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amc-table", default=None, help="AMC table JSON (default: the shipped one)")
    ap.add_argument("--pixels-per-element", type=int, default=64,
                    help="latent-ldpc: pixels per latent position")
    return ap


def _validate(args):
    """Everything checkable before work: inputs, table, condition. UsageError, one line."""
    from ..channel.condition import Condition, ConditionError

    latent = args.method == "latent-ldpc"
    src = args.latents if latent else args.images
    if not src:
        raise UsageError("--latents is required for latent-ldpc" if latent
                         else "--images is required for the jpeg methods")
    if not os.path.isdir(src):
        raise UsageError(f"input folder {src!r} does not exist")
    exts = (".npy",) if latent else _IMG_EXT
    files = sorted(f for f in os.listdir(src) if f.lower().endswith(exts))
    if not files:
        raise UsageError(f"no {'/'.join(exts)} files in {src!r}")
    if args.amc_table is not None and not os.path.isfile(args.amc_table):
        raise UsageError(f"AMC table {args.amc_table!r} does not exist")
    if args.pixels_per_element < 1:
        raise UsageError(f"--pixels-per-element={args.pixels_per_element} must be >= 1")
    if args.method == "jpeg2000-ldpc" and args.headers == "agreed":
        raise UsageError("--headers agreed is implemented for jpeg-ldpc only")
    try:
        cond = Condition(args.rate, args.snr, args.delay_spread)
    except ConditionError as e:
        raise UsageError(str(e)) from None
    return src, files, cond


def main(argv=None) -> int:
    """The command (``argv`` without the program name). Returns 0; raises UsageError."""
    args = _parser().parse_args(argv)
    src, files, cond = _validate(args)
    try:
        from ..channel import amc
        table = amc.load_table(args.amc_table)
        amc.select_mcs(cond, num_pixels=4096, table=table)  # table readable, SNR within it
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"AMC table: {e}") from None
    created = prepare_output_dir(args.out)
    try:
        return _run(args, src, files, cond, table)
    except BaseException:
        remove_if_empty(created)
        raise


def _run(args, src, files, cond, table) -> int:
    from .. import runtime
    runtime.setup()  # after validation: bad input never touches caches

    import jax
    from PIL import Image
    from tqdm import tqdm

    from ..metrics import psnr
    from .jpeg_ldpc import jpeg_ldpc
    from .latent_ldpc import latent_ldpc

    print(f"{args.method}: {len(files)} files from {src}, {cond}", file=sys.stderr)
    key = jax.random.key(args.seed)
    rows = []
    for i, name in enumerate(tqdm(files, desc=args.method, unit="file")):
        k = jax.random.fold_in(key, i)
        path = os.path.join(src, name)
        if args.method == "latent-ldpc":
            z = np.load(path, allow_pickle=False)
            r = latent_ldpc(z, cond, k, pixels_per_element=args.pixels_per_element, table=table)
            if r["sent"]:
                np.save(os.path.join(args.out, name), r["latent"])
            quality = dict(sent=r["sent"],
                           mse=float(np.mean((r["latent"] - z) ** 2)) if r["sent"] else "",
                           bits_per_element=r["bits_per_element"], pool=r["pool"],
                           payload_bits=r["payload_bits"])
        else:
            img = np.asarray(Image.open(path).convert("RGB"), np.uint8)
            r = jpeg_ldpc(img, cond, k, codec="jpeg2000" if args.method == "jpeg2000-ldpc" else "jpeg",
                          headers=args.headers, table=table)
            if r["sent"]:
                stem = os.path.splitext(name)[0]
                Image.fromarray(r["image"]).save(os.path.join(args.out, stem + ".png"))
                q = float(psnr(img.astype(np.float32), r["image"].astype(np.float32), data_range=255.0))
            quality = dict(sent=r["sent"], psnr_db=q if r["sent"] else "", headers=r["headers"],
                           bytes=r["bytes"], quality="" if r["quality"] is None else r["quality"],
                           scale="" if r["scale"] is None else r["scale"],
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
    sent = [r for r in rows if r["sent"]]
    unsent = len(rows) - len(sent)
    modes = sorted({r["headers"] for r in rows}) if args.method != "latent-ldpc" else []
    label = f" (headers {'/'.join(modes)})" if modes else ""
    summary = f"{len(rows)} files -> {args.out}{label}; "
    if sent:
        vals = np.array([r[key_metric] for r in sent], float)
        summary += f"mean {key_metric} over the {len(sent)} sent = {np.mean(vals):.4g}"
    else:
        summary += f"no {key_metric}: nothing could be sent"
    if unsent:
        summary += (f"; {unsent} of {len(rows)} could not be sent (the budget of "
                    f"{rows[0]['info_bits']} bits holds no payload; sent=False in results.csv)")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
