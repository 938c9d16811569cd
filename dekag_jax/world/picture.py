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


def _say(msg: str) -> None:
    """Progress on stderr (the picture takes a minute; stdout keeps the written paths)."""
    print(msg, file=sys.stderr, flush=True)


def write_pictures(out: str | os.PathLike, *, n: int = 3, size: int = DEFAULT_SIZE, scale: int = 2,
                   model: str | os.PathLike | None = DEFAULT_MODEL, num_steps: int = 50,
                   guidance_scale: float = 7.5, categories=CATEGORIES, progress: bool = True) -> list[Path]:
    """Write the per-category grids into ``out``; returns the written paths."""
    import time

    say = _say if progress else (lambda msg: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipe, why = None, None
    if model is not None and (Path(model) / "model_index.json").is_file():
        t0 = time.time()
        say(f"loading the edge pipeline from {model} ...")
        try:
            from dekag_jax.weights.pipeline import load_pipeline
            pipe = load_pipeline(str(model))
            say(f"  loaded in {time.time() - t0:.1f} s")
        except Exception as e:  # report, do not fake the column
            why = f"failed to load {model}: {type(e).__name__}: {e}"
    else:
        why = f"no shipped edge model at {model}"
    if pipe is None:
        print(f"MISSING: edge-model column left out ({why})", file=sys.stderr)
    written = []
    for ci, cat in enumerate(categories):
        t0 = time.time()
        subs = [s for s in target_subjects() if s.category == cat]
        say(f"[{ci + 1}/{len(categories)}] {cat}: rendering {len(subs)} subjects x {n} seeds "
            "(cloud, edge world)")
        seeds_c = [split_seeds(s, "cg_test")[:n] for s in subs]
        cloud = np.stack([cloud_generate(s.spec, sd, size) for s, sd in zip(subs, seeds_c)])
        edge = np.stack([render_batch([s.spec] * n, sd, "edge", size) for s, sd in zip(subs, seeds_c)])
        groups = [("cloud (cg_test seeds)", cloud), ("edge-world render (same seeds)", edge)]
        title = f"tiny world: {cat} subjects ({size}x{size})"
        if pipe is not None:
            say(f"[{ci + 1}/{len(categories)}] {cat}: sampling the edge model, {len(subs) * n} images, "
                f"DDIM {num_steps} steps" + (" (the first batch compiles: ~1 min on a CPU)" if ci == 0 else ""))
            seeds_e = [split_seeds(s, "eg_test")[:n] for s in subs]
            imgs = model_samples(pipe, [s.prompt for s in subs for _ in range(n)], sum(seeds_e, []), size,
                                 num_steps=num_steps, guidance_scale=guidance_scale)
            groups.append((f"edge model (DDIM {num_steps}, g={guidance_scale})", imgs.reshape(len(subs), n, size, size, 3)))
        else:
            title += "   [edge-model column MISSING: model not shipped]"
        path = out / f"world_{cat}.png"
        _grid(title, [(s.id, s.prompt) for s in subs], groups, scale).save(path)
        print(f"wrote {path}  ({time.time() - t0:.1f} s)", flush=True)
        written.append(path)
    return written


def _check_args(a) -> None:
    """Reject bad arguments before any work (one line each)."""
    from dekag_jax.errors import UsageError
    from .splits import SPLIT_SIZES

    n_max = SPLIT_SIZES["cg_test"]
    if not 1 <= a.n <= n_max:
        raise UsageError(f"--n={a.n} must be in 1..{n_max} (the subjects' cg_test seeds)")
    if a.size < 16 or a.size % 8:
        raise UsageError(f"--size={a.size} must be a multiple of 8 and >= 16 (renderer, f=8 VAE)")
    if not 1 <= a.scale <= 16:
        raise UsageError(f"--scale={a.scale} must be in 1..16")
    if a.steps < 1:
        raise UsageError(f"--steps={a.steps} must be >= 1")
    if not np.isfinite(a.guidance):
        raise UsageError(f"--guidance={a.guidance} must be finite")
    if a.model.lower() != "none" and Path(a.model) != DEFAULT_MODEL \
            and not (Path(a.model) / "model_index.json").is_file():
        raise UsageError(f"--model {a.model!r} is not a diffusers pipeline folder (no model_index.json)")


def main(argv=None) -> int:
    """``python -m dekag_jax.world.picture``: validates, then sets up the runtime and draws."""
    from dekag_jax.errors import ArgumentParser, prepare_output_dir, remove_if_empty

    ap = ArgumentParser(prog="python -m dekag_jax.world.picture", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (created; must be writable)")
    ap.add_argument("--n", type=int, default=3, help="images per column group")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE)
    ap.add_argument("--scale", type=int, default=2, help="pixel upscaling of the tiles")
    ap.add_argument("--model", default=str(DEFAULT_MODEL),
                    help="edge pipeline directory (diffusers format); 'none' leaves the column out")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    a = ap.parse_args(argv)
    _check_args(a)
    created = prepare_output_dir(a.out)  # before a minute of work, not after
    try:
        from dekag_jax import runtime
        runtime.setup()
        write_pictures(a.out, n=a.n, size=a.size, scale=a.scale,
                       model=None if a.model.lower() == "none" else a.model, num_steps=a.steps,
                       guidance_scale=a.guidance)
    except BaseException:
        remove_if_empty(created)
        raise
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main
    raise SystemExit(cli_main(main))
