"""Plumbing shared by ``scripts/pretrain_*.py`` (the tiny world's pretrained models).

Nothing here is model specific: paths of the shipped assets, the JAX compilation cache, the
optimiser recipe (optax AdamW with warmup + cosine decay and global-norm clipping), progress
lines with the loss, and a small JSON training log per model (seed, steps, wall time, machine
load) that lands next to the weights in ``dekag_jax/world/assets/training/``.

``DEKAG_WORLD_ASSETS`` (environment, read once at import): the asset root every script reads and
writes instead of the shipped ``dekag_jax/world/assets`` (same layout: ``edge_pipeline/``,
``judges/``, ``training/``, ``jscc/``), so a retrained world (``scripts/pretrain_world_v2.sh``)
lands beside the shipped one and replaces it only after its gates pass.
``DEKAG_RENDER_WORKERS``: processes that render the image pools (``world_data.render_pool``; the
images are the same for any count).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as `python scripts/pretrain_x.py` from anywhere
    sys.path.insert(0, REPO)

SHIPPED_ASSETS = os.path.join(REPO, "dekag_jax", "world", "assets")
ASSETS = os.path.abspath(os.environ.get("DEKAG_WORLD_ASSETS") or SHIPPED_ASSETS)
EDGE_PIPELINE = os.path.join(ASSETS, "edge_pipeline")
JUDGE_DINO = os.path.join(ASSETS, "judges", "dino")
JUDGE_CLIP = os.path.join(ASSETS, "judges", "clip")
TRAINING_LOGS = os.path.join(ASSETS, "training")
# Storage dtype of every shipped weight file: models train in float32 and ship in float16, which
# halves the package (26 -> 13 MB) and changes no gate beyond its margin (the gates are measured on
# the shipped files). Loaders cast back to the dtype asked for (float32 by default).
SHIP_DTYPE = "float16"
# Intermediate products of one pretraining run (image pools, cached latents): not shipped.
WORK = os.path.join(REPO, "runs", "pretrain")


def setup_jax() -> None:
    """The package's one runtime setup (persistent compilation cache, distributed when asked)."""
    from dekag_jax import runtime

    runtime.setup(min_compile_time_s=2.0)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def add_world_args(ap) -> None:
    """``--world-version`` (1: the shipped world; 2: with the extended prompts) and
    ``--max-train-s`` (stop the training loop after this many seconds, save what there is and
    say so in the log: the budget guard of a timed run, e.g. on a lent GPU)."""
    ap.add_argument("--world-version", type=int, default=1, choices=(1, 2),
                    help="tiny-world version of the prompts and renders (2 adds the interaction phrases)")
    ap.add_argument("--max-train-s", type=float, default=None,
                    help="stop the training loop after this many seconds (logged as stopped early)")


def machine() -> dict:
    """What ran the script: platform, CPU count, JAX backend and device kind."""
    import jax

    dev = jax.devices()[0]
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
            "device_kind": getattr(dev, "device_kind", str(dev)), "devices": jax.device_count()}


def make_optimizer(lr: float, steps: int, *, warmup: int | None = None, weight_decay: float = 1e-2,
                   clip: float = 1.0, end_frac: float = 0.05, mask: Any = None):
    """AdamW with linear warmup and cosine decay to ``end_frac * lr``, gradients clipped."""
    import optax

    warmup = max(1, min(warmup if warmup is not None else steps // 20, steps - 1))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), lr * end_frac)
    return optax.chain(optax.clip_by_global_norm(clip),
                       optax.adamw(sched, b1=0.9, b2=0.99, weight_decay=weight_decay, mask=mask)), sched


class Progress:
    """Periodic progress lines (step, smoothed loss, steps/s, load) and the final training log."""

    def __init__(self, name: str, steps: int, *, every: int = 50, seed: int = 0, config: dict | None = None,
                 max_train_s: float | None = None):
        self.name, self.steps, self.every, self.seed = name, steps, every, seed
        self.max_train_s = max_train_s
        self.last_step = 0
        self.stopped_early = False
        self.config = dict(config or {})
        self.t0 = time.time()
        self.t_train = None
        self.load_start = loadavg()
        self.loads: list[float] = []
        self.ema: dict[str, float] = {}
        self.history: list[dict] = []
        print(f"[{name}] seed={seed} steps={steps} load={self.load_start} python={platform.python_version()}",
              flush=True)

    def phase(self, msg: str) -> None:
        print(f"[{self.name}] {time.time() - self.t0:7.1f}s {msg}", flush=True)

    def start_training(self) -> None:
        self.t_train = time.time()

    def time_up(self, step: int) -> bool:
        """True (once, and logged) when ``max_train_s`` of training has passed after ``step``
        (before the last step): the caller breaks its loop and saves."""
        if self.max_train_s is None or step >= self.steps or self.t_train is None:
            return False
        if time.time() - self.t_train < self.max_train_s:
            return False
        self.stopped_early = True
        self.phase(f"max_train_s={self.max_train_s} reached after step {step} of {self.steps}: stopping early")
        return True

    def update(self, step: int, metrics: dict[str, float]) -> None:
        self.last_step = step
        for k, v in metrics.items():
            v = float(v)
            self.ema[k] = v if k not in self.ema else 0.9 * self.ema[k] + 0.1 * v
        if step % self.every == 0 or step == self.steps:
            el = time.time() - (self.t_train or self.t0)
            load = os.getloadavg()[0]
            self.loads.append(load)
            rate = step / el if el > 0 else 0.0
            eta = (self.steps - step) / rate if rate > 0 else float("nan")
            txt = " ".join(f"{k}={v:.4f}" for k, v in self.ema.items())
            print(f"[{self.name}] step {step:6d}/{self.steps} {txt} | {rate:5.2f} it/s eta {eta:5.0f}s "
                  f"load {load:.2f}", flush=True)
            self.history.append({"step": step, **{k: round(v, 5) for k, v in self.ema.items()}})

    def finish(self, extra: dict | None = None) -> dict:
        wall = time.time() - self.t0
        rec = {
            "model": self.name,
            "seed": self.seed,
            "steps": self.steps,
            "wall_time_s": round(wall, 1),
            "train_loop_s": round(time.time() - self.t_train, 1) if self.t_train else None,
            "loadavg_start": self.load_start,
            "loadavg_end": loadavg(),
            "loadavg_1min_mean_during_training": round(sum(self.loads) / len(self.loads), 2) if self.loads else None,
            "cpu_count": os.cpu_count(),
            "steps_done": self.last_step,
            "stopped_early": self.stopped_early,
            "final_metrics": {k: round(v, 5) for k, v in self.ema.items()},
            "machine": machine(),
            "config": self.config,
            "history": self.history,
            **(extra or {}),
        }
        os.makedirs(TRAINING_LOGS, exist_ok=True)
        with open(os.path.join(TRAINING_LOGS, f"{self.name}.json"), "w") as f:
            json.dump(rec, f, indent=1, default=str)
        print(f"[{self.name}] done in {wall:.1f}s (load {rec['loadavg_end']})", flush=True)
        return rec


def param_count(params) -> int:
    import jax

    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def to_float_images(x_uint8):
    """uint8 [N, H, W, 3] -> float32 in [-1, 1] (the SD VAE's input range)."""
    import jax.numpy as jnp

    return jnp.asarray(x_uint8, jnp.float32) / 127.5 - 1.0


# ----------------------------------------------------------------------------- augmentations (JAX)

def random_resized_crop(key, img, out_size: int, scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision-style RandomResizedCrop of one image, in JAX (vmap it over a batch).

    img: [H, W, C] float32; returns [out_size, out_size, C] float32 (bilinear, antialiased).
    """
    import jax
    import jax.numpy as jnp

    h, w = img.shape[0], img.shape[1]
    k1, k2, k3, k4 = jax.random.split(key, 4)
    area = jax.random.uniform(k1, (), minval=scale[0], maxval=scale[1])
    logr = jax.random.uniform(k2, (), minval=jnp.log(ratio[0]), maxval=jnp.log(ratio[1]))
    r = jnp.exp(logr)
    cw = jnp.clip(jnp.sqrt(area * r) * w, 4.0, w)
    ch = jnp.clip(jnp.sqrt(area / r) * h, 4.0, h)
    x0 = jax.random.uniform(k3, ()) * (w - cw)
    y0 = jax.random.uniform(k4, ()) * (h - ch)
    sy, sx = out_size / ch, out_size / cw
    return jax.image.scale_and_translate(img, (out_size, out_size, img.shape[2]), (0, 1),
                                         jnp.stack([sy, sx]), jnp.stack([-y0 * sy, -x0 * sx]),
                                         method="linear", antialias=True)


def _gray(img):
    import jax.numpy as jnp

    return jnp.sum(img * jnp.asarray([0.299, 0.587, 0.114], img.dtype), axis=-1, keepdims=True)


def color_jitter(key, img, *, brightness=0.3, contrast=0.3, saturation=0.3, p_gray=0.1):
    """Brightness/contrast/saturation jitter and random grayscale. img in [0, 1], [H, W, 3]."""
    import jax
    import jax.numpy as jnp

    kb, kc, ks, kg = jax.random.split(key, 4)
    u = lambda k, a: jax.random.uniform(k, (), minval=1 - a, maxval=1 + a)
    img = img * u(kb, brightness)
    m = jnp.mean(_gray(img))
    img = (img - m) * u(kc, contrast) + m
    g = _gray(img)
    img = (img - g) * u(ks, saturation) + g
    img = jnp.where(jax.random.uniform(kg) < p_gray, jnp.broadcast_to(_gray(img), img.shape), img)
    return jnp.clip(img, 0.0, 1.0)


def gaussian_blur(key, img, p: float, sigma=(0.1, 1.5)):
    """With probability p, blur [H, W, C] with a separable 5-tap Gaussian of random sigma."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(key)
    s = jax.random.uniform(k1, (), minval=sigma[0], maxval=sigma[1])
    t = jnp.arange(-2, 3, dtype=jnp.float32)
    g = jnp.exp(-0.5 * (t / s) ** 2)
    g = g / g.sum()
    pad = jnp.pad(img, ((2, 2), (2, 2), (0, 0)), mode="edge")
    h = sum(g[i] * pad[i:i + img.shape[0], :, :] for i in range(5))
    b = sum(g[i] * h[:, i:i + img.shape[1], :] for i in range(5))
    return jnp.where(jax.random.uniform(k2) < p, b, img)


def hflip(key, img, p: float = 0.5):
    import jax
    import jax.numpy as jnp

    return jnp.where(jax.random.uniform(key) < p, img[:, ::-1, :], img)
