"""Round trip on the shipped tiny pipeline: our adapter files in diffusers' own pipeline.

diffusers' ``StableDiffusionPipeline`` with ``load_lora_weights`` (our
``pytorch_lora_weights.safetensors``: UNet attention LoRA with alpha != rank, plus text-encoder
LoRA) and ``load_textual_inversion`` (our ``learned_embeds.safetensors``) gives, from the same
noise, the same DDIM latents as our merged model with the metaword inserted as a new token.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")  # diffusers' load_lora_weights needs it

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dekag_jax.adapt import lora, metaword  # noqa: E402
from dekag_jax.diffusion.generate import encode_prompt, text_to_latents  # noqa: E402
from dekag_jax.models.tokenizer import tokenize  # noqa: E402
from dekag_jax.weights import adapters as AF  # noqa: E402
from dekag_jax.world import models  # noqa: E402
from dekag_jax.world.subjects import target_subjects  # noqa: E402

STEPS, GUIDANCE, TOKEN = 4, 5.0, "<mu>"
UNET_RULE = (r".*/attn[12]/to_(q|k|v|out\.0)/kernel", 4, 6.0)  # scale 1.5: alpha != rank
TEXT_RULE = (r"text_model/encoder/layers\.\d+/self_attn/(q|v)_proj/kernel", 2, 1.0)  # scale 0.5


def _randomised(key, params, rule, b_std, seed):
    """Adapters from ``lora.init`` (A as PEFT) with B made non-zero, so the update is visible."""
    ad, specs = lora.init(key, params, [rule])
    rng = np.random.default_rng(seed)
    for p in sorted(ad):
        ad[p]["lora_B"] = (b_std * rng.standard_normal(ad[p]["lora_B"].shape)).astype(np.float32)
    return ad, specs


def test_our_files_in_diffusers_pipeline_give_our_latents(tmp_path):
    ours = models.load_edge_pipeline()
    ku, kt, ke = jax.random.split(jax.random.key(7), 3)
    u_ad, u_specs = _randomised(ku, ours.unet_params, UNET_RULE, 0.05, 0)
    t_ad, t_specs = _randomised(kt, ours.text_params, TEXT_RULE, 0.05, 1)
    table = np.asarray(ours.text_params["text_model"]["embeddings"]["token_embedding"]["embedding"])
    mu = np.asarray(jax.random.normal(ke, (1, table.shape[1]))) * table.std()  # a metaword at the table's scale

    AF.save_lora(str(tmp_path), u_ad, u_specs, text_encoder_adapters=t_ad, text_encoder_alphas=t_specs)
    AF.save_textual_inversion(str(tmp_path), TOKEN, mu)

    # ours: merged weights, the metaword as a new token row (what load_textual_inversion does)
    tok = copy.deepcopy(ours.tokenizer)
    text_params = lora.merge(ours.text_params, t_ad, t_specs)
    te, tp, ids = AF.add_token_embeddings(tok, ours.text_encoder, text_params, TOKEN, mu)
    assert len(ids) == 1 and ids[0] == table.shape[0]
    adapted = dataclasses.replace(ours, unet_params=lora.merge(ours.unet_params, u_ad, u_specs), text_encoder=te,
                                  text_params=tp, tokenizer=tok, _jit_cache={})
    subs = target_subjects()
    prompts = [f"{TOKEN} {subs[0].prompt}", f"{TOKEN} {subs[17].prompt}"]  # "μ a Shiba plush toy" (eq. 8)
    # The token route equals adapt.metaword's route (mu spliced after BOS through inputs_embeds,
    # the prompt tokenised without the token), which is what MAKD trains.
    c_token = np.asarray(encode_prompt(te, tp, tokenize(tok, prompts)))
    c_splice = np.asarray(metaword.encode_prompt(
        ours.text_encoder, text_params, tokenize(ours.tokenizer, [subs[0].prompt, subs[17].prompt]),
        jnp.asarray(mu), eos_id=ours.tokenizer.eos_token_id)["last_hidden_state"])
    np.testing.assert_allclose(c_splice, c_token, atol=1e-5 * np.abs(c_token).max(), rtol=0)
    ss = ours.unet.config.sample_size
    z_T = jax.random.normal(jax.random.key(3), (2, ss, ss, ours.unet.config.in_channels), jnp.float32)
    z_ours = np.asarray(text_to_latents(adapted, prompts, jax.random.key(0), num_steps=STEPS,
                                        guidance_scale=GUIDANCE, latents=z_T))

    # float32 explicitly: the shipped weights are float16 and transformers 5 keeps a stored dtype
    ref = diffusers.StableDiffusionPipeline.from_pretrained(models.edge_pipeline_dir(), dtype=torch.float32)
    ref.load_lora_weights(str(tmp_path))
    ref.load_textual_inversion(str(tmp_path))
    size = ss * ours.vae_scale_factor

    def run_ref(prompts):
        with torch.no_grad():
            return ref(prompts, height=size, width=size, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                       latents=torch.from_numpy(np.asarray(z_T).transpose(0, 3, 1, 2).copy()),
                       output_type="latent").images.numpy().transpose(0, 2, 3, 1)

    z_ref = run_ref(prompts)
    scale = float(np.abs(z_ref).max())
    assert scale > 0.1
    rel = float(np.abs(z_ours - z_ref).max()) / scale
    print(f"max |ours - diffusers| / max |diffusers| = {rel:.1e} (latents up to {scale:.2f})")
    assert rel <= 1e-4, rel
    # every part matters (so the 1e-4 above is a real check): without the LoRA, or without the
    # metaword, diffusers' latents are far from these
    ref.disable_lora()
    assert np.abs(run_ref(prompts) - z_ref).max() > 1e-2 * scale
    ref.enable_lora()
    assert np.abs(run_ref([s.prompt for s in (subs[0], subs[17])]) - z_ref).max() > 1e-2 * scale
