"""Pretrain the tiny world's edge UNet (diffusers ``UNet2DConditionModel``, SD2-style: linear
projections, head counts in ``attention_head_dim``, cross-attention on the frozen CLIP text
tower's ``last_hidden_state``) with the eps-prediction DDPM loss of eq. 1 (scaled_linear betas,
T = 1000), on EDGE-world renders only: random prompts plus the 30 target prompts, all read the
edge world's way. 10% of the prompts are dropped to "" for classifier-free guidance.

Needs the VAE (scripts/pretrain_vae.py) and the text encoder (scripts/pretrain_clip.py) in
``dekag_jax/world/assets/edge_pipeline/``. Latents are precomputed once through the trained VAE
(posterior mean and std; a fresh posterior sample is drawn each step, as SD's training does);
an EMA of the weights (decay ramped to 0.999) is what ships.

Writes the whole ``assets/edge_pipeline/`` (``save_pipeline``: model_index.json, unet/, vae/,
text_encoder/, tokenizer/, scheduler/ with a DDIM config: steps_offset 1, set_alpha_to_one
false, clip_sample false, "leading") and ``assets/training/unet.json``.

    python scripts/pretrain_unet.py [--steps N] [--seed S] [--out DIR]
    python scripts/pretrain_unet.py --seed 1 --lr 3e-4 --init-from dekag_jax/world/assets/edge_pipeline/unet
    python scripts/pretrain_unet.py --seed 2 --lr 2e-4 --init-from dekag_jax/world/assets/edge_pipeline/unet
        (the shipped UNet = stage 1 (seed 0, 1400 steps) + two continuations of 1400 steps, each on
        a fresh pool; each stage is one run of under 30 minutes on the 2-core CPU)
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402
import world_data as W  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

SCHEDULER = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "trained_betas": None, "clip_sample": False, "set_alpha_to_one": False,
    "steps_offset": 1, "prediction_type": "epsilon", "timestep_spacing": "leading", "thresholding": False,
    "rescale_betas_zero_snr": False,
}


def unet_hf_config(latent_size: int, cross_dim: int) -> dict:
    return dict(sample_size=latent_size, in_channels=4, out_channels=4,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                block_out_channels=[32, 64, 128], layers_per_block=1, attention_head_dim=[1, 2, 4],
                cross_attention_dim=cross_dim, use_linear_projection=True, upcast_attention=False,
                norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=12000, help="edge renders encoded to latents")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--out", default=C.EDGE_PIPELINE)
    ap.add_argument("--init-from", default=None,
                    help="a diffusers unet/ directory to continue from (second stage; use another --seed)")
    ap.add_argument("--name", default=None, help="training-log name (default unet / unet_continued_seed<S>)")
    C.add_world_args(ap)
    args = ap.parse_args(argv)
    C.setup_jax()

    from dekag_jax.diffusion.generate import encode_prompt
    from dekag_jax.diffusion.schedules import diffusion_loss, from_scheduler_config
    from dekag_jax.models.unet import UNet2DConditionModel, UNetConfig
    from dekag_jax.models.vae import AutoencoderKL
    from dekag_jax.weights.hf import load_text_encoder
    from dekag_jax.weights.pipeline import StableDiffusion, save_pipeline
    from dekag_jax.weights.sd import load_vae
    from dekag_jax.world import load_tokenizer

    vae, vae_params = load_vae(os.path.join(args.out, "vae"))
    te, te_params = load_text_encoder(os.path.join(args.out, "text_encoder"))
    tok = load_tokenizer(os.path.join(args.out, "tokenizer"))
    size = W.image_size()
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    cfg = UNetConfig.from_hf(unet_hf_config(size // f, te.config.hidden_size))
    unet = UNet2DConditionModel(cfg)
    schedule = from_scheduler_config(SCHEDULER)
    name = args.name or ("unet" if not args.init_from else f"unet_continued_seed{args.seed}")
    prog = C.Progress(name, args.steps, every=50, seed=args.seed, max_train_s=args.max_train_s,
                      config={"unet": cfg.to_hf(), "batch": args.batch, "pool": args.pool, "lr": args.lr,
                              "p_uncond": args.p_uncond, "ema": args.ema, "scheduler": SCHEDULER,
                              "init_from": args.init_from and os.path.relpath(args.init_from, C.REPO),
                              "world_version": args.world_version})

    # Edge-world (prompt, image) pairs -> token ids [N, 77] and VAE posterior (mean, std) [N, h, w, 4].
    specs = W.spec_pool(args.pool, args.seed + 555, target_frac=0.3, version=args.world_version)
    images = W.render_pool(specs, args.seed + 555, "edge")
    ids = np.asarray(tok([s.prompt for s in specs], padding="max_length", max_length=tok.model_max_length,
                         truncation=True)["input_ids"], np.int32)
    empty = np.asarray(tok([""], padding="max_length", max_length=tok.model_max_length)["input_ids"], np.int32)
    prog.phase(f"rendered {images.shape[0]} edge pairs")

    @jax.jit
    def encode(x_u8):
        x = x_u8.astype(jnp.float32) / 127.5 - 1.0
        mean, logvar = vae.apply({"params": vae_params}, x, method=AutoencoderKL.encode)
        return mean, jnp.exp(0.5 * logvar)

    means, stds = [], []
    for k in range(0, images.shape[0], 256):
        m, s = encode(jnp.asarray(images[k:k + 256]))
        means.append(np.asarray(m))
        stds.append(np.asarray(s))
    means, stds = np.concatenate(means), np.concatenate(stds)
    sf = float(vae.config.scaling_factor)
    prog.phase(f"encoded latents {means.shape}; scaled std {float((means * sf).std()):.3f}")

    key = jax.random.key(args.seed)
    k_init, key = jax.random.split(key)
    if args.init_from:
        from dekag_jax.weights.sd import load_unet

        init_module, params = load_unet(args.init_from)
        if init_module.config != cfg:
            raise ValueError(f"--init-from {args.init_from}: its config differs from this script's UNet config")
    else:
        params = unet.init(k_init, *unet.dummy_inputs())["params"]
    ema = jax.tree_util.tree_map(jnp.array, params)
    opt, _ = C.make_optimizer(args.lr, args.steps, warmup=args.steps // 20, weight_decay=1e-2, clip=1.0)
    opt_state = opt.init(params)
    empty_j = jnp.asarray(empty)

    def train_step(p, e, s, step, ids_b, mean_b, std_b, k):
        kz, kd, kl = jax.random.split(k, 3)
        z0 = (mean_b + std_b * jax.random.normal(kz, mean_b.shape)) * sf
        drop = jax.random.bernoulli(kd, args.p_uncond, (ids_b.shape[0], 1))
        ids_b = jnp.where(drop, empty_j, ids_b)
        cond = jax.lax.stop_gradient(encode_prompt(te, te_params, ids_b))  # frozen text tower

        def loss_fn(p):
            return diffusion_loss(lambda z, t, c: unet.apply({"params": p}, z, t, c), z0, kl,
                                  schedule=schedule, cond=cond)

        loss, g = jax.value_and_grad(loss_fn)(p)
        upd, s = opt.update(g, s, p)
        p = optax.apply_updates(p, upd)
        d = jnp.minimum(args.ema, (1.0 + step) / (10.0 + step))
        e = jax.tree_util.tree_map(lambda a, b: d * a + (1 - d) * b, e, p)
        return p, e, s, {"loss": loss}

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2))
    rng = np.random.default_rng(args.seed)
    prog.start_training()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, means.shape[0], size=args.batch)
        key, k = jax.random.split(key)
        params, ema, opt_state, m = train_step(params, ema, opt_state, jnp.float32(step), jnp.asarray(ids[idx]),
                                               jnp.asarray(means[idx]), jnp.asarray(stds[idx]), k)
        prog.update(step, jax.device_get(m))
        if prog.time_up(step):
            break

    pipe = StableDiffusion(unet=unet, unet_params=jax.device_get(ema), vae=vae, vae_params=jax.device_get(vae_params),
                           text_encoder=te, text_params=jax.device_get(te_params), tokenizer=tok,
                           scheduler_config=dict(SCHEDULER))
    save_pipeline(pipe, args.out, dtype=C.SHIP_DTYPE)
    prog.finish({"params": C.param_count(ema), "out": os.path.relpath(args.out, C.REPO)})


if __name__ == "__main__":
    main()
