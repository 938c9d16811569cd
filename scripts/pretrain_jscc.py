"""Pretrain the JSCC codecs of the tiny world (paper eq. 4): JSCC(MT), JSCC(AT), RC-JSCC, VJ-MAE.

    python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:mt
    python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:at --config.steps=800
    python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:mt --ship   # also into assets/jscc/
    python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:rc --ship   # RC-JSCC (ka/adaptive.py)
    python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py:vjmae --ship

RC-JSCC and VJ-MAE (``config.kind``): gamma and omega drawn per sample from Phi_EU, the rate
chosen by their own policies (RC-JSCC: Gumbel-softmax at an annealed temperature, the rate term
in the loss; VJ-MAE: the latent's entropy against thresholds calibrated on the training latents
first, plus MAE-style random rates). Their held-out report holds the PSNR per *forced* rate at
the eval condition (the gate) and, per SNR of Phi_EU, the rate their policy picks freely and the
PSNR it gives.

Data: ``generic_corpus(corpus_size, corpus_seed)`` (the DiffusionDB analogue) through the shipped
edge VAE encoder (latents z = scaling * posterior mean), paired with x = f_LD(z); held-out images
from another corpus seed. Each step draws a batch (deterministic in (seed, step)) and a condition
phi = (tau, gamma, omega) per sample from the config's grids; one compiled step serves all rates.
The edge VAE decoder (the shared latent decoder) stays frozen.

Resumable: the training state is checkpointed with orbax under ``--workdir`` every
``checkpoint_every`` steps and restored on the next run with the same workdir. Seeded: same config
and seed give the same batches and conditions. The run stops early (and says so in the log) when
``max_wall_s`` is reached.

Outputs: ``<workdir>/codec/`` (float16 safetensors + config), the training log
``dekag_jax/world/assets/training/<name>.json`` (machine, load, wall time, loss history, the
held-out PSNR per rate at ``eval.snr_db`` / ``eval.delay_spread_ns`` against x = f_LD(z) and against
the original images, and the VAE's own reconstruction PSNR), and with ``--ship`` the float16
codec in ``dekag_jax/world/assets/jscc/<name>/``. The smoke variant writes its log in the workdir.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402  (puts the repo on sys.path)

_USAGE = ("python scripts/pretrain_jscc.py --config configs/jscc_pretrain.py[:mt|:at|:rc|:vjmae|:smoke] "
          "[--config.FIELD=VALUE ...] [--workdir DIR] [--ship] [--debug]")


def _parse(argv):
    from absl import flags
    from ml_collections import config_flags

    from dekag_jax.errors import UsageError

    fv = flags.FlagValues()
    cflag = config_flags.DEFINE_config_file("config", None, "configs/jscc_pretrain.py:VARIANT", flag_values=fv)
    flags.DEFINE_string("workdir", None, "checkpoints, cached latents, the trained codec (default runs/pretrain/<name>)",
                        flag_values=fv)
    flags.DEFINE_bool("ship", False, "copy the float16 codec into dekag_jax/world/assets/jscc/<name>/", flag_values=fv)
    flags.DEFINE_bool("debug", False, "tracebacks instead of one-line errors", flag_values=fv)
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {_USAGE}\n\n{__doc__.strip()}")
        raise SystemExit(0)
    if not any(a == "--config" or a.startswith("--config=") for a in argv):
        raise UsageError("--config is required (e.g. --config configs/jscc_pretrain.py:mt)")
    try:
        fv(["pretrain_jscc"] + list(argv))
        cfg = cflag.value
    except (flags.Error, ValueError) as e:
        raise UsageError(" ".join(str(e).split())) from None
    return cfg, fv


def _validate(cfg):
    """Everything a user can get wrong in the config, checked before any work (one line each)."""
    from dekag_jax.errors import UsageError
    from dekag_jax.ka.codec_training import ConditionGrid
    from dekag_jax.ka.objective import LossWeights
    from dekag_jax.ka.transmission import LinkConfig
    from dekag_jax.channel.ofdm import OFDMConfig
    from dekag_jax.models.jscc import JSCCConfig

    try:
        link = LinkConfig(qam_order=cfg.link.qam_order, quantizer=cfg.link.quantizer,
                          temperature=cfg.link.temperature, channel=cfg.link.channel,
                          ofdm=OFDMConfig(equalizer=cfg.link.equalizer))
        grid = ConditionGrid.from_config(cfg.conditions.rates, cfg.conditions.snrs_db,
                                         cfg.conditions.delay_spreads_ns)
        grid.omega_indices(link)
        weights = LossWeights(latent=cfg.loss.latent, image=cfg.loss.image, perceptual=cfg.loss.perceptual,
                              constellation=cfg.loss.constellation)
        codec_cfg = JSCCConfig.named(cfg.codec)
        from dekag_jax.ka.transmission import check_snr_db, delay_spread_index
        check_snr_db(cfg.eval.snr_db)
        delay_spread_index(cfg.eval.delay_spread_ns * 1e-9, link)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if cfg.loss.balance not in ("none", "log"):
        raise UsageError(f"loss.balance={cfg.loss.balance!r}; expected 'none' or 'log'")
    if cfg.kind not in ("jscc", "rc", "vjmae"):
        raise UsageError(f"kind={cfg.kind!r}; expected 'jscc', 'rc' or 'vjmae'")
    if cfg.kind != "jscc" and not 0.0 <= cfg.adaptive.mae_random_prob <= 1.0:
        raise UsageError(f"adaptive.mae_random_prob={cfg.adaptive.mae_random_prob} must be in [0, 1]")
    if cfg.kind == "rc" and not 0.0 <= cfg.adaptive.explore_prob < 1.0:
        raise UsageError(f"adaptive.explore_prob={cfg.adaptive.explore_prob} must be in [0, 1)")
    if cfg.kind != "jscc" and not 0 < cfg.adaptive.temperature_end <= cfg.adaptive.temperature_start:
        raise UsageError("adaptive: need 0 < temperature_end <= temperature_start")
    if cfg.loss.perceptual_network not in ("edge_vae_encoder", "none"):
        raise UsageError(f"loss.perceptual_network={cfg.loss.perceptual_network!r}; expected 'edge_vae_encoder' or "
                         "'none'")
    for name in ("steps", "batch", "checkpoint_every", "log_every"):
        if int(cfg[name]) < 1:
            raise UsageError(f"{name}={cfg[name]} must be >= 1")
    if cfg.data.corpus_size < cfg.batch:
        raise UsageError(f"data.corpus_size={cfg.data.corpus_size} is smaller than the batch {cfg.batch}")
    return link, grid, weights, codec_cfg


def _latents(pipe, images_u8, batch=128):
    import jax.numpy as jnp
    import numpy as np

    from dekag_jax.diffusion.generate import decode_latents, encode_images

    zs, xs = [], []
    for k in range(0, len(images_u8), batch):
        z = encode_images(pipe, jnp.asarray(images_u8[k:k + batch], jnp.float32) / 255.0)
        zs.append(np.asarray(z))
        xs.append(np.asarray(decode_latents(pipe, z)))
    return np.concatenate(zs), np.concatenate(xs)


def _data(cfg, pipe, workdir, prog):
    """(z_train, x_train, z_held, x_held, img_held) cached in the workdir (keyed by the data config)."""
    import numpy as np

    from dekag_jax.world.corpus import generic_corpus

    d = cfg.data
    path = os.path.join(workdir, f"latents_n{d.corpus_size}_s{d.corpus_seed}_h{d.heldout_size}_s{d.heldout_seed}.npz")
    if os.path.isfile(path):
        f = np.load(path)
        return f["z"], f["x"], f["zh"], f["xh"], f["imh"]
    prog.phase(f"rendering {d.corpus_size} generic-corpus images + {d.heldout_size} held out, encoding")
    _, imgs = generic_corpus(d.corpus_size, seed=d.corpus_seed)
    _, imh = generic_corpus(d.heldout_size, seed=d.heldout_seed)
    z, x = _latents(pipe, imgs)
    zh, xh = _latents(pipe, imh)
    np.savez(path, z=z, x=x, zh=zh, xh=xh, imh=imh)
    return z, x, zh, xh, imh


def _codec_config(cfg, z):
    """The codec's static config; VJ-MAE's entropy thresholds calibrated on the training latents z."""
    from dekag_jax.models import adaptive_jscc as A
    from dekag_jax.models.jscc import JSCCConfig

    base = JSCCConfig.named(cfg.codec).to_dict()
    base["block_out_channels"] = tuple(base["block_out_channels"])
    if cfg.kind == "rc":
        return A.RCJSCCConfig(**base, base_units=cfg.adaptive.base_units)
    if cfg.kind == "vjmae":
        c = A.VJMAEConfig(**base, base_units=cfg.adaptive.base_units)
        return A.VJMAEConfig(**base, base_units=cfg.adaptive.base_units, thresholds=A.calibrate_thresholds(z, c))
    return JSCCConfig.named(cfg.codec)


def _warm_start(cfg, codec_cfg, params):
    """Parameters from the codec directory ``cfg.init_from`` (same config required), except the
    paths matching the regex ``cfg.init_fresh``, which keep their fresh (seeded) initialisation.
    A new optimizer state and schedule start at step 0 (a checkpoint in the workdir still wins)."""
    import re

    import jax.numpy as jnp

    from dekag_jax.errors import UsageError
    from dekag_jax.ka.codec_io import load_codec
    from dekag_jax.weights.convert import flatten, unflatten

    try:
        old_codec, old, _ = load_codec(cfg.init_from)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"init_from: {e}") from None
    if old_codec.config != codec_cfg:
        raise UsageError(f"init_from={cfg.init_from!r}: its codec config differs from this run's")
    fresh = re.compile(cfg.init_fresh) if cfg.init_fresh else None
    new, old = flatten(params), flatten(old)
    return unflatten({k: v if fresh is not None and fresh.search(k) else jnp.asarray(old[k], v.dtype)
                      for k, v in new.items()})


def _evaluate_policy(cfg, codec, params, vae, vae_params, link, zh, xh, seed):
    """RC-JSCC / VJ-MAE: per SNR of the grid (omega = eval.delay_spread_ns), the rate the policy picks
    with no budget (mean n and its histogram) and the received PSNR against x = f_LD(z)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dekag_jax.ka.adaptive import transmit_adaptive, units_histogram
    from dekag_jax.ka.transmission import decode_latents, delay_spread_index

    widx = int(delay_spread_index(cfg.eval.delay_spread_ns * 1e-9, link))

    @jax.jit
    def run(z, key, snr):
        t, info = transmit_adaptive(codec, params, z, key, rate_units=6, snr_db=snr, omega_index=widx, link=link,
                                    mode="free")
        return decode_latents(vae, vae_params, t.z_check), info.units

    out = {}
    for snr in cfg.conditions.snrs_db:
        ps, us = [], []
        for r in range(cfg.eval.repeats):
            xc, u = run(jnp.asarray(zh), jax.random.fold_in(jax.random.key(seed + 11), 1000 * int(snr) + r),
                        jnp.float32(snr))
            ps.append(-10 * np.log10(np.mean((np.asarray(xc) - xh) ** 2, axis=(1, 2, 3))))
            us.append(np.asarray(u))
        out[f"{snr:g}"] = {"psnr_vs_decoded_db": round(float(np.mean(ps)), 2),
                           "mean_rate_units": round(float(np.mean(us)), 3), "rates": units_histogram(np.stack(us))}
    return out


def _evaluate(cfg, codec, params, vae, vae_params, link, zh, xh, imh, seed):
    """Held-out PSNR per rate at the eval condition: against x = f_LD(z) and the original images
    (RC-JSCC / VJ-MAE: each rate forced, their policy overridden)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dekag_jax.ka.transmission import ReceiveFn

    fn = ReceiveFn(codec, vae, link, rate_mode="force" if cfg.kind != "jscc" else "cap")
    orig = np.asarray(imh, np.float32) / 255.0
    out = {}
    for n in range(getattr(codec.config, "base_units", 1), codec.config.max_rate_units + 1):
        p_dec, p_orig = [], []
        for r in range(cfg.eval.repeats):
            _, xc = fn(params, vae_params, jnp.asarray(zh), jax.random.fold_in(jax.random.key(seed + 7), 100 * n + r),
                       rate=f"{n}/64", snr_db=cfg.eval.snr_db, delay_spread_s=cfg.eval.delay_spread_ns * 1e-9)
            xc = np.asarray(xc)
            p_dec.append(-10 * np.log10(np.mean((xc - xh) ** 2, axis=(1, 2, 3))))
            p_orig.append(-10 * np.log10(np.mean((xc - orig) ** 2, axis=(1, 2, 3))))
        out[f"{n}/64"] = {"psnr_vs_decoded_db": round(float(np.mean(p_dec)), 2),
                          "psnr_vs_original_db": round(float(np.mean(p_orig)), 2)}
    vae_psnr = float(np.mean(-10 * np.log10(np.mean((xh - orig) ** 2, axis=(1, 2, 3)))))
    return out, round(vae_psnr, 2)


def main(argv):
    cfg, fv = _parse(argv)
    link, grid, weights, codec_cfg = _validate(cfg)
    from dekag_jax.errors import prepare_output_dir

    workdir = fv.workdir or os.path.join(C.WORK, cfg.name)
    prepare_output_dir(workdir, "--workdir")
    C.setup_jax()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import orbax.checkpoint as ocp

    from dekag_jax.ka.codec_io import save_codec
    from dekag_jax.ka.codec_training import init_state, make_train_step
    from dekag_jax.ka.objective import vae_encoder_features
    from dekag_jax.ka.adaptive import make_adaptive_train_step, temperature_at
    from dekag_jax.models.adaptive_jscc import init_adaptive_codec
    from dekag_jax.models.jscc import JSCCCodec
    from dekag_jax.world.models import load_edge_pipeline

    prog = C.Progress(cfg.name, cfg.steps, every=cfg.log_every, seed=cfg.seed, config=cfg.to_dict())
    pipe = load_edge_pipeline(components=("vae",), assets=C.ASSETS)  # DEKAG_WORLD_ASSETS may point elsewhere
    z, x, zh, xh, imh = _data(cfg, pipe, workdir, prog)
    prog.phase(f"data: {z.shape[0]} training latents {z.shape[1:]}, {zh.shape[0]} held out")

    codec_cfg = _codec_config(cfg, z)
    if cfg.kind == "jscc":
        codec = JSCCCodec(config=codec_cfg)
        params = jax.jit(codec.init)(jax.random.key(cfg.seed), jnp.zeros((1, *z.shape[1:]), jnp.float32))["params"]
    else:
        codec, params = init_adaptive_codec(codec_cfg, jax.random.key(cfg.seed), tuple(z.shape[1:3]))
        if cfg.kind == "vjmae":
            prog.phase(f"VJ-MAE entropy thresholds (bits/element, training-latent quantiles): {codec_cfg.thresholds}")
    if cfg.init_from:
        params = _warm_start(cfg, codec_cfg, params)
        prog.phase(f"warm start from {cfg.init_from} (fresh: {cfg.init_fresh or 'nothing'})")
    n_params = C.param_count(params)
    opt, _ = C.make_optimizer(cfg.lr, cfg.steps, weight_decay=cfg.weight_decay)
    features = vae_encoder_features(pipe.vae) if cfg.loss.perceptual_network == "edge_vae_encoder" else None
    if cfg.kind == "jscc":
        step_fn = make_train_step(codec, pipe.vae, opt, link=link, weights=weights, grid=grid, features=features,
                                  balance=cfg.loss.balance)
    else:
        adaptive_step = make_adaptive_train_step(codec, pipe.vae, opt, link=link, weights=weights, grid=grid,
                                                 features=features, rate_weight=cfg.adaptive.rate_weight,
                                                 mae_random_prob=cfg.adaptive.mae_random_prob,
                                                 explore_prob=cfg.adaptive.explore_prob if cfg.kind == "rc" else 0.0)

        def step_fn(state, aux, zb, xb, key):
            temp = temperature_at(state["step"], cfg.steps, cfg.adaptive.temperature_start,
                                  cfg.adaptive.temperature_end)
            return adaptive_step(state, aux, zb, xb, key, temp)
    aux = {"vae": pipe.vae_params, "feat": pipe.vae_params}
    state = init_state(params, opt)

    ckpt_dir = os.path.abspath(os.path.join(workdir, "ckpt"))
    mgr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=2))
    start = 0
    if mgr.latest_step() is not None:
        start = int(mgr.latest_step())
        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
        state = mgr.restore(start, args=ocp.args.StandardRestore(abstract))
        prog.phase(f"resumed from step {start}")

    zj, xj = jnp.asarray(z), jnp.asarray(x)
    prog.phase(f"codec {cfg.codec}: {n_params} parameters; compiling the step")
    prog.start_training()
    t_loop = time.time()
    stopped_early = False
    step = start
    for step in range(start + 1, cfg.steps + 1):
        idx = np.random.default_rng([cfg.seed, step]).choice(z.shape[0], cfg.batch, replace=False)
        state, m = step_fn(state, aux, zj[idx], xj[idx], jax.random.fold_in(jax.random.key(cfg.seed + 1), step))
        if step % cfg.log_every == 0 or step == cfg.steps:
            prog.update(step, {k: float(v) for k, v in m.items()})
        if step % cfg.checkpoint_every == 0:
            mgr.save(step, args=ocp.args.StandardSave(state))
        if time.time() - t_loop > cfg.max_wall_s:
            stopped_early = True
            prog.phase(f"max_wall_s={cfg.max_wall_s} reached at step {step}: stopping early")
            mgr.save(step, args=ocp.args.StandardSave(state), force=True)
            break
    mgr.wait_until_finished()

    prog.phase("evaluating on held-out generic images")
    per_rate, vae_psnr = _evaluate(cfg, codec, state["params"], pipe.vae, pipe.vae_params, link, zh, xh, imh, cfg.seed)
    policy = None
    if cfg.kind != "jscc":
        policy = _evaluate_policy(cfg, codec, state["params"], pipe.vae, pipe.vae_params, link, zh, xh, cfg.seed)
        for g, v in policy.items():
            prog.phase(f"  policy at {g} dB: mean rate {v['mean_rate_units']:.2f}/64 {v['rates']}, "
                       f"received PSNR {v['psnr_vs_decoded_db']:.2f} dB")
    for r, v in per_rate.items():
        prog.phase(f"  tau={r}: received PSNR {v['psnr_vs_decoded_db']:.2f} dB vs f_LD(z), "
                   f"{v['psnr_vs_original_db']:.2f} dB vs original (VAE's own reconstruction: {vae_psnr:.2f} dB)")
    codec_dir = os.path.join(workdir, "codec")
    train_info = {"name": cfg.name, "steps_done": step, "seed": cfg.seed, "variant": cfg.variant, "kind": cfg.kind}
    save_codec(codec_dir, codec_cfg, state["params"], extra=train_info)
    shipped = None
    if fv.ship:
        shipped = os.path.join(C.ASSETS, "jscc", cfg.name)
        save_codec(shipped, codec_cfg, state["params"], extra=train_info)
    if cfg.variant.endswith("smoke"):
        C.TRAINING_LOGS = workdir   # a smoke run does not touch the shipped logs
    import platform
    rec = prog.finish({"params": n_params, "steps_done": step, "stopped_early": stopped_early,
                       "resumed_from": start, "machine": {"platform": platform.platform(),
                                                          "processor": platform.processor() or platform.machine(),
                                                          "jax_backend": jax.default_backend()},
                       "eval_condition": {"snr_db": cfg.eval.snr_db, "delay_spread_ns": cfg.eval.delay_spread_ns,
                                          "heldout_images": int(zh.shape[0]), "repeats": cfg.eval.repeats},
                       "heldout_psnr_per_rate": per_rate, "vae_reconstruction_psnr_db": vae_psnr,
                       **({"rate_mode_per_rate": "force", "policy_free_per_snr": policy} if policy else {}),
                       "codec_dir": codec_dir, "shipped": shipped})
    print(json.dumps({"heldout_psnr_per_rate": per_rate, "vae_reconstruction_psnr_db": vae_psnr,
                      "wall_time_s": rec["wall_time_s"]}))
    return 0


if __name__ == "__main__":
    from dekag_jax.errors import cli_main

    sys.exit(cli_main(main))
