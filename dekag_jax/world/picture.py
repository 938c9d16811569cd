"""Overview pictures of the tiny world: ``python -m dekag_jax.world.picture --out DIR``.

Writes one labelled PNG grid per category (``world_human.png``, ...): one row per target subject
(id + prompt), columns

* ``cloud``: cloud-world images (the cloud-GAI's samples; the subject's first ``cg_test`` seeds),
* ``edge render``: edge-world renders of the same prompt with the same seeds (the same pose
  uniforms, so the columns differ only by interpretation and hidden detail),
* ``edge model``: samples of the shipped edge model (``dekag_jax/world/assets/edge_pipeline``,
  DDIM 50 steps, guidance 7.5, initial noise from the subject's ``eg_test`` seeds). If the model is
  not shipped (or fails to load), the column is left out, the picture title says so and a line
  starting with ``MISSING`` is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .render import CATEGORIES, DEFAULT_SIZE, render_batch
from .splits import cloud_generate, split_seeds
from .subjects import target_subjects

DEFAULT_MODEL = Path(__file__).resolve().parent / "assets" / "edge_pipeline"


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def model_samples(pipe, prompts: list[str], seeds: list[int], size: int, *, num_steps: int = 50,
                  guidance_scale: float = 7.5, batch: int = 16) -> np.ndarray:
    """uint8 [N, size, size, 3] edge-model samples; sample i starts from noise
    ``normal(PRNGKey(seeds[i]))`` so each image is tied to its own seed."""
    import jax
    import jax.numpy as jnp

    from dekag_jax.diffusion.generate import decode_latents, text_to_latents, vae_scale_factor

    f = vae_scale_factor(pipe)
    c = pipe.unet.config.in_channels
    out = []
    for k in range(0, len(prompts), batch):
        ps, ss = prompts[k:k + batch], seeds[k:k + batch]
        pad = batch - len(ps)           # keep one compiled batch shape
        ps, ss = ps + ps[:1] * pad, ss + ss[:1] * pad
        z_T = jnp.stack([jax.random.normal(jax.random.PRNGKey(s), (size // f, size // f, c)) for s in ss])
        z = text_to_latents(pipe, ps, jax.random.PRNGKey(0), num_steps=num_steps,
                            guidance_scale=guidance_scale, latents=z_T)
        img = np.asarray(decode_latents(pipe, z))[: batch - pad]
        out.append((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.concatenate(out, 0)


def _grid(title: str, rows: list[tuple[str, str]], groups: list[tuple[str, np.ndarray]], scale: int) -> Image.Image:
    """rows: (id, prompt); groups: (column-group label, uint8 [R, K, S, S, 3])."""
    n_rows = len(rows)
    S = groups[0][1].shape[2] * scale
    label_w, head_h, title_h, gap, pad = 230, 34, 30, 10, 2
    width = label_w + sum(g.shape[1] * (S + pad) + gap for _, g in groups)
    height = title_h + head_h + n_rows * (S + pad)
    im = Image.new("RGB", (width, height), (255, 255, 255))
    dr = ImageDraw.Draw(im)
    f_title, f_head, f_row = _font(16), _font(13), _font(11)
    dr.text((6, 6), title, fill=(0, 0, 0), font=f_title)
    x = label_w
    for label, g in groups:
        dr.text((x + 2, title_h + 4), label, fill=(0, 0, 0), font=f_head)
        for r in range(n_rows):
            for k in range(g.shape[1]):
                tile = Image.fromarray(g[r, k]).resize((S, S), Image.NEAREST)
                im.paste(tile, (x + k * (S + pad), title_h + head_h + r * (S + pad)))
        x += g.shape[1] * (S + pad) + gap
    for r, (sid, prompt) in enumerate(rows):
        y = title_h + head_h + r * (S + pad) + 4
        dr.text((6, y), sid, fill=(0, 0, 0), font=f_head)
        for i, line in enumerate(textwrap.wrap(prompt, 34)):
            dr.text((6, y + 18 + 13 * i), line, fill=(40, 40, 40), font=f_row)
    return im


def write_pictures(out: str | os.PathLike, *, n: int = 3, size: int = DEFAULT_SIZE, scale: int = 2,
                   model: str | os.PathLike | None = DEFAULT_MODEL, num_steps: int = 50,
                   guidance_scale: float = 7.5, categories=CATEGORIES) -> list[Path]:
    """Write the per-category grids into ``out``; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, why = None, None
    if model is not None and (Path(model) / "model_index.json").is_file():
        try:
            from dekag_jax.weights.pipeline import load_pipeline
            pipe = load_pipeline(str(model))
        except Exception as e:  # report, do not fake the column
            why = f"failed to load {model}: {type(e).__name__}: {e}"
    else:
        why = f"no shipped edge model at {model}"
    if pipe is None:
        print(f"MISSING: edge-model column left out ({why})", file=sys.stderr)
    written = []
    for cat in categories:
        subs = [s for s in target_subjects() if s.category == cat]
        seeds_c = [split_seeds(s, "cg_test")[:n] for s in subs]
        cloud = np.stack([cloud_generate(s.spec, sd, size) for s, sd in zip(subs, seeds_c)])
        edge = np.stack([render_batch([s.spec] * n, sd, "edge", size) for s, sd in zip(subs, seeds_c)])
        groups = [("cloud (cg_test seeds)", cloud), ("edge-world render (same seeds)", edge)]
        title = f"tiny world: {cat} subjects ({size}x{size})"
        if pipe is not None:
            seeds_e = [split_seeds(s, "eg_test")[:n] for s in subs]
            imgs = model_samples(pipe, [s.prompt for s in subs for _ in range(n)], sum(seeds_e, []), size,
                                 num_steps=num_steps, guidance_scale=guidance_scale)
            groups.append((f"edge model (DDIM {num_steps}, g={guidance_scale})", imgs.reshape(len(subs), n, size, size, 3)))
        else:
            title += "   [edge-model column MISSING: model not shipped]"
        path = out / f"world_{cat}.png"
        _grid(title, [(s.id, s.prompt) for s in subs], groups, scale).save(path)
        print(f"wrote {path}")
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n", type=int, default=3, help="images per column group")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE)
    ap.add_argument("--scale", type=int, default=2, help="pixel upscaling of the tiles")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="edge pipeline directory (diffusers format)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    a = ap.parse_args(argv)
    write_pictures(a.out, n=a.n, size=a.size, scale=a.scale, model=a.model, num_steps=a.steps,
                   guidance_scale=a.guidance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
