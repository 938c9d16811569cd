"""Pretrain the tiny world's visual judge: a small ViT (transformers ``ViTModel`` layout, patch 8)
trained self-supervised the DINO way (Caron et al. 2021), on renders of BOTH worlds.

DINO recipe, scaled down: a student and a teacher (EMA of the student, momentum cosine-ramped to
1), each a ViT backbone + projection head (3-layer MLP, L2-normalised bottleneck, weight-normalised
prototype layer); multi-crop augmentation in JAX (2 global crops, several local crops, flips,
mild colour jitter, blur, solarisation); the teacher sees only global crops, its outputs are
centred (running mean) and sharpened (low temperature); loss = cross-entropy between teacher and
student distributions over all (global teacher crop, other student crop) pairs.

Only the backbone ships (``dekag_jax/world/assets/judges/dino/``, loadable by
``transformers.ViTModel.from_pretrained``); the DINO-score of eq. 5 is the cosine similarity of
its CLS features (``dekag_jax.models.vit.dino_features``).

    python scripts/pretrain_dino.py [--steps N] [--seed S] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pretrain_common as C  # noqa: E402
import world_data as W  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402


def vit_hf_config(image_size: int) -> dict:
    """A tiny DINO ViT in the transformers ``ViTConfig`` layout (DINO v1 checkpoints use ViTModel)."""
    from transformers import ViTConfig

    cfg = ViTConfig(hidden_size=96, num_hidden_layers=4, num_attention_heads=3, intermediate_size=288,
                    hidden_act="gelu", image_size=image_size, patch_size=8, num_channels=3,
                    qkv_bias=True, layer_norm_eps=1e-6, hidden_dropout_prob=0.0,
                    attention_probs_dropout_prob=0.0)
    d = cfg.to_dict()
    d["architectures"] = ["ViTModel"]
    return d


class DINOHead(nn.Module):
    """DINO projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes (g = 1).

    x: [B, D] -> [B, out_dim] float32. Training-only, never shipped.
    """

    out_dim: int = 1024
    hidden: int = 256
    bottleneck: int = 64

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden)(x), approximate=False)
        x = nn.gelu(nn.Dense(self.hidden)(x), approximate=False)
        x = nn.Dense(self.bottleneck)(x)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
        v = self.param("last_layer_v", nn.initializers.normal(0.02), (self.bottleneck, self.out_dim))
        w = v / jnp.maximum(jnp.linalg.norm(v, axis=0, keepdims=True), 1e-6)
        return x @ w


def dino_loss(student_out, teacher_out, center, n_crops: int, n_global: int, t_student: float, t_teacher):
    """DINO cross-entropy over (teacher global crop i, student crop j != i) pairs.

    student_out: [n_crops*B, K]; teacher_out: [n_global*B, K]; center: [K].
    Returns (loss, teacher probabilities [n_global*B, K]).
    """
    s = jnp.split(jax.nn.log_softmax(student_out / t_student, axis=-1), n_crops)
    tp = jax.nn.softmax((teacher_out - center) / t_teacher, axis=-1)
    t = jnp.split(jax.lax.stop_gradient(tp), n_global)
    total, n = 0.0, 0
    for i in range(n_global):
        for j in range(n_crops):
            if i == j:
                continue
            total = total + jnp.mean(jnp.sum(-t[i] * s[j], axis=-1))
            n += 1
    return total / n, tp


def make_augment(image_size: int, local_size: int, n_local: int):
    """uint8 [H, W, 3] -> ([2, G, G, 3] global crops, [n_local, l, l, 3] local crops), in [0, 1]."""

    def solarize(key, img, p):
        return jnp.where(jax.random.uniform(key) < p, jnp.where(img > 0.5, 1.0 - img, img), img)

    def one(key, img_u8, size, scale, p_blur, p_sol):
        img = img_u8.astype(jnp.float32) / 255.0
        k = jax.random.split(key, 5)
        x = C.random_resized_crop(k[0], img, size, scale)
        x = C.hflip(k[1], x)
        x = C.color_jitter(k[2], x, brightness=0.3, contrast=0.3, saturation=0.2, p_gray=0.1)
        x = C.gaussian_blur(k[3], x, p_blur)
        return solarize(k[4], x, p_sol)

    def augment(key, img_u8):
        kg1, kg2, kl = jax.random.split(key, 3)
        g = jnp.stack([one(kg1, img_u8, image_size, (0.35, 1.0), 0.8, 0.0),
                       one(kg2, img_u8, image_size, (0.35, 1.0), 0.1, 0.2)])
        loc = jax.vmap(lambda k: one(k, img_u8, local_size, (0.08, 0.35), 0.5, 0.0))(jax.random.split(kl, n_local))
        return g, loc

    return jax.vmap(augment)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool", type=int, default=2000, help="images rendered per world")
    ap.add_argument("--n-local", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--out", default=C.JUDGE_DINO)
    C.add_world_args(ap)
    args = ap.parse_args(argv)
    C.setup_jax()

    from dekag_jax.models.vit import ViTConfig, ViTModel, preprocess
    from dekag_jax.weights.hf import save_dino

    size = W.image_size()
    hf_cfg = vit_hf_config(size)
    prog = C.Progress("dino", args.steps, every=25, seed=args.seed,
                      config={"vit": {k: hf_cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                             "intermediate_size", "patch_size", "image_size")},
                              "batch": args.batch, "pool_per_world": args.pool, "n_local": args.n_local,
                              "lr": args.lr, "world_version": args.world_version},
                      max_train_s=args.max_train_s)
    pool = W.image_pool(args.pool, seed=args.seed + 11, worlds=("edge", "cloud"), version=args.world_version)
    prog.phase(f"rendered pool {pool.shape}")

    vit = ViTModel(ViTConfig.from_hf(hf_cfg))

    def backbone_cls(p, crops01):
        # Local crops are smaller than image_size: interpolate the position grid (as DINO does).
        x = preprocess(crops01, "dino", size=crops01.shape[1])
        return vit.apply({"params": p}, x, interpolate_pos_encoding=crops01.shape[1] != size)["pooler_output"]

    head = DINOHead()
    key = jax.random.key(args.seed)
    k_init, k_head, key = jax.random.split(key, 3)
    p_backbone = vit.init(k_init, jnp.zeros((1, size, size, 3)))["params"]
    p_head = head.init(k_head, jnp.zeros((1, hf_cfg["hidden_size"])))["params"]
    student = {"backbone": p_backbone, "head": p_head}
    teacher = jax.tree_util.tree_map(jnp.array, student)
    center = jnp.zeros((head.out_dim,), jnp.float32)
    local_size = size // 2
    n_crops = 2 + args.n_local
    augment = make_augment(size, local_size, args.n_local)
    # Biases and norm scales are not decayed (as in DINO).
    wd_mask = jax.tree_util.tree_map_with_path(
        lambda p, x: x.ndim > 1 and "position_embeddings" not in jax.tree_util.keystr(p), student)
    opt, sched = C.make_optimizer(args.lr, args.steps, warmup=args.steps // 10, weight_decay=0.04, clip=3.0,
                                  mask=wd_mask)
    opt_state = opt.init(student)

    def forward(params, crops):
        return head.apply({"params": params["head"]}, backbone_cls(params["backbone"], crops))

    def train_step(student, teacher, opt_state, center, key, images, step):
        g, loc = augment(jax.random.split(key, images.shape[0]), images)
        g = jnp.concatenate([g[:, 0], g[:, 1]])                     # [2B, S, S, 3]
        loc = jnp.concatenate([loc[:, i] for i in range(args.n_local)])  # [nB, s, s, 3]
        frac = step / args.steps
        t_teacher = 0.04  # sharpening (DINO's default teacher temperature)
        t_out = forward(teacher, g)

        def loss_fn(p):
            s_out = jnp.concatenate([forward(p, g), forward(p, loc)])
            loss, tp = dino_loss(s_out, t_out, center, n_crops, 2, 0.1, t_teacher)
            return loss, tp

        (loss, tp), grads = jax.value_and_grad(loss_fn, has_aux=True)(student)
        updates, opt_state = opt.update(grads, opt_state, student)
        student = optax.apply_updates(student, updates)
        m = 1.0 - (1.0 - 0.99) * (jnp.cos(jnp.pi * frac) + 1) / 2  # teacher momentum 0.99 -> 1
        teacher = jax.tree_util.tree_map(lambda t, s: m * t + (1 - m) * s, teacher, student)
        center = 0.9 * center + 0.1 * jnp.mean(t_out, axis=0)
        ent = -jnp.mean(jnp.sum(tp * jnp.log(tp + 1e-12), -1))
        mean_p = jnp.mean(tp, 0)
        ent_mean = -jnp.sum(mean_p * jnp.log(mean_p + 1e-12))  # high = not collapsed onto one prototype
        return student, teacher, opt_state, center, {"loss": loss, "t_ent": ent, "batch_ent": ent_mean}

    train_step = jax.jit(train_step, donate_argnums=(0, 1, 2, 3))
    rng = np.random.default_rng(args.seed)
    prog.start_training()
    for step in range(1, args.steps + 1):
        idx = rng.integers(0, pool.shape[0], size=args.batch)
        key, k = jax.random.split(key)
        student, teacher, opt_state, center, metrics = train_step(student, teacher, opt_state, center, k,
                                                                  jnp.asarray(pool[idx]), step)
        prog.update(step, jax.device_get(metrics))
        if prog.time_up(step):
            break
    # The teacher is the better network at the end of DINO training; it is what ships.
    os.makedirs(args.out, exist_ok=True)
    save_dino(args.out, vit, jax.device_get(teacher["backbone"]), dtype=C.SHIP_DTYPE)
    prog.finish({"params": C.param_count(teacher["backbone"]), "out": os.path.relpath(args.out, C.REPO)})


if __name__ == "__main__":
    main()
