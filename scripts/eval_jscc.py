"""Held-out PSNR of trained JSCC codecs over a grid of conditions (default Phi_EU, 75 conditions).

    python scripts/eval_jscc.py runs/pretrain/jscc_mt/codec runs/pretrain/jscc_at/codec [--grid eu|pretrain]
        [--images 64] [--repeats 2] [--json out.json]

Images: ``generic_corpus(images, seed=1)`` (the pretraining scripts' held-out seed) through the
shipped edge VAE; PSNR of the received image against x = f_LD(z), averaged over images and
channel realisations, per condition and over the grid, plus the VAE's own reconstruction PSNR
against the originals for scale.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402


def main(argv):
    from dekag_jax.errors import ArgumentParser, UsageError

    ap = ArgumentParser(description=__doc__)
    ap.add_argument("codecs", nargs="+", help="codec directories (ka.codec_io.save_codec)")
    ap.add_argument("--grid", choices=("eu", "pretrain"), default="eu",
                    help="eu: Phi_EU (75 conditions); pretrain: 10 dB, 300 ns, tau 1..6/64")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    for d in a.codecs:
        if not os.path.isdir(d):
            raise UsageError(f"codec directory {d!r} does not exist")
    C.setup_jax()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from dekag_jax.channel.condition import Condition, phi_eu_grid
    from dekag_jax.diffusion.generate import decode_latents, encode_images
    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.ka.transmission import ReceiveFn
    from dekag_jax.world.corpus import generic_corpus
    from dekag_jax.world.models import load_edge_pipeline

    pipe = load_edge_pipeline(components=("vae",))
    _, imgs = generic_corpus(a.images, seed=a.seed)
    orig = imgs.astype(np.float32) / 255.0
    z = encode_images(pipe, jnp.asarray(orig))
    x = np.asarray(decode_latents(pipe, z))
    vae_psnr = float(np.mean(-10 * np.log10(np.mean((x - orig) ** 2, axis=(1, 2, 3)))))
    grid = phi_eu_grid() if a.grid == "eu" else [Condition(f"{n}/64", 10.0, 300e-9) for n in range(1, 7)]
    out = {"vae_reconstruction_psnr_db": round(vae_psnr, 2), "images": a.images, "repeats": a.repeats,
           "grid": a.grid, "codecs": {}}
    for d in a.codecs:
        codec, params, meta = load_codec(d)
        fn = ReceiveFn(codec, pipe.vae)
        per = {}
        for i, c in enumerate(grid):
            ps = []
            for r in range(a.repeats):
                _, xc = fn(params, pipe.vae_params, z, jax.random.fold_in(jax.random.key(1234), 1000 * i + r),
                           condition=c)
                ps.append(-10 * np.log10(np.mean((np.asarray(xc) - x) ** 2, axis=(1, 2, 3))))
            per[c.key] = round(float(np.mean(ps)), 3)
        name = meta.get("training", {}).get("name", d)
        mean = float(np.mean(list(per.values())))
        out["codecs"][name] = {"dir": d, "mean_psnr_db": round(mean, 3), "per_condition": per}
        print(f"{name}: mean received PSNR over {len(grid)} conditions {mean:.2f} dB "
              f"(VAE's own reconstruction {vae_psnr:.2f} dB)", flush=True)
        if a.grid == "eu":
            for g in (0.0, 10.0, 20.0):
                sel = [v for k, v in per.items() if f"_snr{g:g}_" in k]
                print(f"  gamma={g:g} dB: {np.mean(sel):.2f} dB", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
