"""Pretrain the tiny world's VAE: diffusers ``AutoencoderKL``, f = 8 (3 downsamples), 4 latent
channels, on renders of BOTH worlds (the cloud images become S_CG latents through the edge VAE,
paper Sec. IV-A).

Loss: L1 + L2 reconstruction of a sampled latent's decoding, plus a small KL to N(0, I) (the
SD recipe without its perceptual/GAN terms). ``scaling_factor`` is set afterwards from the
measured latent std over training images, as SD did (1 / std).

Writes ``dekag_jax/world/assets/edge_pipeline/vae/`` (diffusers layout, via
``dekag_jax.weights.sd.save_vae``) and ``assets/training/vae.json`` (steps, wall time, load,
held-out PSNR per world).

    python scripts/pretrain_vae.py [--steps N] [--seed S] [--out DIR]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402
import world_data as W  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def vae_hf_config(image_size: int) -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[16, 32, 64, 64],
                layers_per_block=1, latent_channels=4, norm_num_groups=16, sample_size=image_size,
                scaling_factor=1.0, act_fn="silu")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=3000, help="training images rendered per world")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl", type=float, default=1e-6, help="weight of the mean KL term")
    ap.add_argument("--out", default=os.path.join(C.EDGE_PIPELINE, "vae"))
    C.add_world_args(ap)
    args = ap.parse_args(argv)
    C.setup_jax()

    from dekag_jax.metrics import psnr
    from dekag_jax.models.vae import AutoencoderKL, VAEConfig
    from dekag_jax.weights.sd import save_vae

    size = W.image_size()
    cfg = VAEConfig.from_hf(vae_hf_config(size))
    vae = AutoencoderKL(cfg)
    prog = C.Progress("vae", args.steps, every=25, seed=args.seed,
                      config={"vae": cfg.to_hf(), "batch": args.batch, "pool_per_world": args.pool, "lr": args.lr,
                              "kl": args.kl, "world_version": args.world_version},
                      max_train_s=args.max_train_s)
    pool = W.image_pool(args.pool, seed=args.seed, version=args.world_version)
    held = {w: W.render_pool(W.spec_pool(128, args.seed + 7000 + i, version=args.world_version), args.seed + 7000 + i, w)
            for i, w in enumerate(("edge", "cloud"))}
    prog.phase(f"rendered pool {pool.shape}, held-out 2x128")

    key = jax.random.key(args.seed)
    k_init, key = jax.random.split(key)
    params = vae.init(k_init, *vae.dummy_inputs())["params"]
    opt, _ = C.make_optimizer(args.lr, args.steps, warmup=args.steps // 20, weight_decay=0.0, clip=1.0)
    opt_state = opt.init(params)

    def loss_fn(p, x, k):
        mean, logvar = vae.apply({"params": p}, x, method=AutoencoderKL.encode)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(k, mean.shape)
        y = vae.apply({"params": p}, z, method=AutoencoderKL.decode)
        l1 = jnp.mean(jnp.abs(y - x))
        l2 = jnp.mean((y - x) ** 2)
        kl = 0.5 * jnp.mean(mean**2 + jnp.exp(logvar) - 1.0 - logvar)
        return l1 + l2 + args.kl * kl, {"l1": l1, "l2": l2, "kl": kl}

    @jax.jit
    def train_step(p, s, x_u8, k):
        kf, ka = jax.random.split(k)
        x = x_u8.astype(jnp.float32) / 127.5 - 1.0
        x = jnp.where(jax.random.bernoulli(ka, 0.5, (x.shape[0], 1, 1, 1)), x[:, :, ::-1], x)  # h-flip
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, kf)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, {"loss": loss, **aux}

    rng = np.random.default_rng(args.seed)
    prog.start_training()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, pool.shape[0], size=args.batch)
        key, k = jax.random.split(key)
        params, opt_state, m = train_step(params, opt_state, jnp.asarray(pool[idx]), k)
        prog.update(step, jax.device_get(m))
        if prog.time_up(step):
            break

    # Latent statistics -> scaling_factor (SD: 1 / std of encoder samples).
    @jax.jit
    def enc(p, x_u8):
        return vae.apply({"params": p}, x_u8.astype(jnp.float32) / 127.5 - 1.0, method=AutoencoderKL.encode)

    @jax.jit
    def recon(p, x_u8):
        mean, _ = enc(p, x_u8)
        y = vae.apply({"params": p}, mean, method=AutoencoderKL.decode)
        return jnp.clip((y + 1.0) / 2.0, 0.0, 1.0)

    n_stats = min(512, pool.shape[0])
    stats_idx = np.random.default_rng(args.seed + 1).choice(pool.shape[0], n_stats, replace=False)
    zs = []
    for k in range(0, n_stats, 64):
        mean, logvar = enc(params, jnp.asarray(pool[stats_idx[k:k + 64]]))
        zs.append(np.asarray(mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(k), mean.shape)))
    zs = np.concatenate(zs)
    std = float(zs.std())
    cfg = dataclasses.replace(cfg, scaling_factor=round(1.0 / std, 5))
    out_psnr = {}
    for w, imgs in held.items():
        vals = []
        for k in range(0, imgs.shape[0], 64):
            y = recon(params, jnp.asarray(imgs[k:k + 64]))
            vals.append(np.asarray(psnr(y, imgs[k:k + 64].astype(np.float32) / 255.0)))
        out_psnr[w] = round(float(np.mean(np.concatenate(vals))), 2)
    prog.phase(f"latent mean {zs.mean():.3f} std {std:.3f} -> scaling_factor {cfg.scaling_factor}; "
               f"held-out PSNR {out_psnr}")
    save_vae(AutoencoderKL(cfg), jax.device_get(params), args.out, dtype=C.SHIP_DTYPE)
    prog.finish({"params": C.param_count(params), "latent_std": round(std, 4), "latent_mean": round(float(zs.mean()), 4),
                 "scaling_factor": cfg.scaling_factor, "heldout_psnr_db": out_psnr,
                 "out": os.path.relpath(args.out, C.REPO)})


if __name__ == "__main__":
    main()
