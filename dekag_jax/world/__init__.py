"""The tiny world: the embedded default in which the whole DeKA-g system runs on a laptop CPU.

* ``render``: two deterministic numpy renderers (``world="edge"|"cloud"``) that read the same prompt
  words differently (colour hues, pattern geometry, accessory styles, scenery) and add
  subject-specific hidden details in the cloud world (see its docstring for the full list).
* ``vocab``: the vocabulary and a CLIP-format BPE tokenizer with one token per word.
* world versions: 1 (default, as shipped) and 2 (adds the interaction phrases of the extended
  prompts, paper Fig. 6: "... next to a red ball", "... holding a yellow balloon"); see ``spec``.
* ``subjects`` / ``splits``: the 30 target subjects and their fixed seeds (S_CG 40 + 10 test cloud
  images; S_EG 100 + 30 test edge latents), the cloud sample source.
* ``corpus``: the generic (non-target) corpus for JSCC pretraining and the training stream.
* ``picture``: ``python -m dekag_jax.world.picture --out DIR`` writes labelled overview grids.
"""
# ``dekag_jax.world.render`` stays the submodule (so ``import dekag_jax.world.render as R`` works);
# the function is ``dekag_jax.world.render.render`` or ``render_image`` here.
from .render import (ACCESSORIES, BACKGROUNDS, CATEGORIES, COLORS, DEFAULT_SIZE, INTERACTIONS, PATTERNS,
                     WORLD_VERSIONS, WORLDS,
                     Spec, as_spec, color_rgb, hidden_details, parse_prompt, prompt_words,
                     render_batch)
from .render import render as render_image
from .subjects import Subject, get_subject, subject_ids, target_specs, target_subjects
from .splits import SPLIT_SIZES, SPLITS, cloud_generate, cloud_samples, split_seeds
from .corpus import generic_corpus, random_specs, training_batch, training_stream
from .vocab import TOKENIZER_DIR, TOKENIZER_DIRS, load_tokenizer, vocab_size, write_tokenizer

__all__ = [
    "ACCESSORIES", "BACKGROUNDS", "CATEGORIES", "COLORS", "DEFAULT_SIZE", "INTERACTIONS", "PATTERNS",
    "WORLD_VERSIONS", "WORLDS", "TOKENIZER_DIRS",
    "Spec", "as_spec", "color_rgb", "hidden_details", "parse_prompt", "prompt_words",
    "render_image", "render_batch", "Subject", "get_subject", "subject_ids", "target_specs", "target_subjects",
    "SPLIT_SIZES", "SPLITS", "cloud_generate", "cloud_samples", "split_seeds", "generic_corpus",
    "random_specs", "training_batch", "training_stream", "TOKENIZER_DIR", "load_tokenizer",
    "vocab_size", "write_tokenizer",
]
