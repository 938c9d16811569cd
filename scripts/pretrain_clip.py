"""Pretrain the tiny world's CLIP: transformers ``CLIPModel`` layout (text tower ``CLIPTextModel``
with gelu like SD2's OpenCLIP, vision tower ViT patch 8, projections, logit_scale), trained
contrastively on (prompt, image) pairs of BOTH worlds.

Two roles (paper Sec. III-B, V-A):
* its vision tower + projection is the semantic judge (CLIP-score of eq. 5);
* its text tower (``last_hidden_state``) is the edge pipeline's text encoder, frozen while the
  UNet trains (as SD2 froze OpenCLIP).

The batch holds repeated prompts (30 target subjects are oversampled), so the InfoNCE targets are
multi-positive: every image whose prompt equals the text's prompt counts as a positive (soft
targets, uniform over positives), in both directions.

Writes ``assets/judges/clip/`` (CLIPModel, ``save_clip_model``), ``assets/edge_pipeline/
text_encoder/`` (CLIPTextModel, ``save_text_encoder``), ``assets/edge_pipeline/tokenizer/`` and
``assets/training/clip.json``.

    python scripts/pretrain_clip.py [--steps N] [--seed S]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402
import world_data as W  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

TOKENS = 16  # longest world prompt is 15 tokens with BOS/EOS; causal attention makes the EOS
             # feature independent of padding after it, so training at 16 equals running at 77.
TOKENS_V2 = 24  # world version 2 appends up to 5 words ("next to an orange ball"): 20 tokens.


def clip_hf_config(tok, image_size: int) -> dict:
    text = dict(model_type="clip_text_model", vocab_size=len(tok), hidden_size=128, intermediate_size=512,
                num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                layer_norm_eps=1e-5, projection_dim=128, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    # patch 16: a 4x4 grid at 64 px keeps the judge cheap enough to train on a shared 2-core CPU.
    vision = dict(model_type="clip_vision_model", hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                  num_attention_heads=4, image_size=image_size, patch_size=16, hidden_act="gelu",
                  layer_norm_eps=1e-5, projection_dim=128, num_channels=3)
    return {"model_type": "clip", "projection_dim": 128, "text_config": text, "vision_config": vision}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=2500, help="pairs rendered per world")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--assets", default=C.ASSETS)
    C.add_world_args(ap)
    args = ap.parse_args(argv)
    C.setup_jax()

    from dekag_jax.models.clip_text import CLIPTextModel
    from dekag_jax.models.vit import CLIPConfig, CLIPModel, preprocess
    from dekag_jax.weights.hf import save_clip_model, save_text_encoder
    from dekag_jax.weights.pipeline import save_tokenizer
    from dekag_jax.world import load_tokenizer

    tok = load_tokenizer(version=args.world_version)
    tokens = TOKENS if args.world_version == 1 else TOKENS_V2
    size = W.image_size()
    cfg = CLIPConfig.from_hf(clip_hf_config(tok, size))
    model = CLIPModel(cfg)
    prog = C.Progress("clip", args.steps, every=50, seed=args.seed,
                      config={"clip": cfg.to_hf(), "batch": args.batch, "pool_per_world": args.pool, "lr": args.lr,
                              "world_version": args.world_version, "tokens": tokens},
                      max_train_s=args.max_train_s)

    # (prompt, image) pairs of both worlds: each world renders its own spec list.
    specs = {w: W.spec_pool(args.pool, args.seed + 31 * (i + 1), target_frac=0.3, version=args.world_version)
             for i, w in enumerate(("edge", "cloud"))}
    images = np.concatenate([W.render_pool(specs[w], args.seed + 31 * (i + 1), w)
                             for i, w in enumerate(("edge", "cloud"))])
    prompts = [s.prompt for w in ("edge", "cloud") for s in specs[w]]
    uniq = sorted(set(prompts))
    index = {p: i for i, p in enumerate(uniq)}
    pid = np.asarray([index[p] for p in prompts], np.int32)
    ids = np.asarray(tok(uniq, padding="max_length", max_length=tokens, truncation=True)["input_ids"], np.int32)
    prog.phase(f"rendered {images.shape[0]} pairs, {len(uniq)} distinct prompts")

    key = jax.random.key(args.seed)
    k_init, key = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((1, tokens), jnp.int32), jnp.zeros((1, size, size, 3)))["params"]
    wd_mask = jax.tree_util.tree_map_with_path(
        lambda p, x: x.ndim > 1 and "embedding" not in jax.tree_util.keystr(p), params)
    opt, _ = C.make_optimizer(args.lr, args.steps, warmup=args.steps // 10, weight_decay=0.05, clip=1.0,
                              mask=wd_mask)
    opt_state = opt.init(params)

    def augment(k, img_u8):
        k1, k2 = jax.random.split(k)
        x = C.random_resized_crop(k1, img_u8.astype(jnp.float32) / 255.0, size, scale=(0.7, 1.0), ratio=(0.9, 1.1))
        return C.hflip(k2, x)

    def loss_fn(p, tok_ids, imgs, same):
        out = model.apply({"params": p}, tok_ids, imgs)
        logits = out["logits_per_image"]                       # [B, B]: image i vs text j
        tgt = same / same.sum(-1, keepdims=True)
        li = optax.softmax_cross_entropy(logits, tgt).mean()
        lt = optax.softmax_cross_entropy(logits.T, tgt.T).mean()  # same is symmetric
        acc = jnp.mean(same[jnp.arange(same.shape[0]), jnp.argmax(logits, -1)])
        return 0.5 * (li + lt), {"acc": acc, "scale": jnp.exp(p["logit_scale"])}

    @jax.jit
    def train_step(p, s, tok_ids, imgs_u8, pids, k):
        imgs = jax.vmap(augment)(jax.random.split(k, imgs_u8.shape[0]), imgs_u8)
        imgs = preprocess(imgs, "clip", size=size)
        same = (pids[:, None] == pids[None, :]).astype(jnp.float32)
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, tok_ids, imgs, same)
        upd, s = opt.update(g, s, p)
        p = optax.apply_updates(p, upd)
        p["logit_scale"] = jnp.clip(p["logit_scale"], 0.0, np.log(100.0))  # CLIP's clamp
        return p, s, {"loss": loss, **aux}

    rng = np.random.default_rng(args.seed)
    prog.start_training()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, images.shape[0], size=args.batch)
        key, k = jax.random.split(key)
        params, opt_state, m = train_step(params, opt_state, jnp.asarray(ids[pid[idx]]), jnp.asarray(images[idx]),
                                          jnp.asarray(pid[idx]), k)
        prog.update(step, jax.device_get(m))
        if prog.time_up(step):
            break

    params = jax.device_get(params)
    clip_dir = os.path.join(args.assets, "judges", "clip")
    save_clip_model(clip_dir, model, params, dtype=C.SHIP_DTYPE)
    te = CLIPTextModel(cfg.text_config)
    pipe_dir = os.path.join(args.assets, "edge_pipeline")
    save_text_encoder(os.path.join(pipe_dir, "text_encoder"), te, {"text_model": params["text_model"]}, dtype=C.SHIP_DTYPE)
    tok_dir = os.path.join(pipe_dir, "tokenizer")
    shutil.rmtree(tok_dir, ignore_errors=True)
    save_tokenizer(tok, tok_dir)
    prog.finish({"params": C.param_count(params), "distinct_prompts": len(uniq),
                 "out": [os.path.relpath(clip_dir, C.REPO), os.path.relpath(pipe_dir, C.REPO) + "/text_encoder"]})


if __name__ == "__main__":
    main()
