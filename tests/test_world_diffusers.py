"""The shipped tiny-world models load in the reference libraries and compute what ours compute.

* edge pipeline: diffusers' own ``StableDiffusionPipeline.from_pretrained`` (PyTorch) from the same
  initial noise gives the same DDIM latents (``output_type="latent"``) as
  :func:`dekag_jax.diffusion.generate.text_to_latents`, and its VAE decodes them to the same image;
* judges: transformers' ``ViTModel`` / ``CLIPModel.from_pretrained`` give the same DINO and CLIP
  features as ours.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from dekag_jax.diffusion.generate import decode_latents, text_to_latents  # noqa: E402
from dekag_jax.world import gates, models  # noqa: E402
from dekag_jax.world.render import render_batch  # noqa: E402
from dekag_jax.world.subjects import target_subjects  # noqa: E402

STEPS, GUIDANCE = 4, 5.0


@pytest.fixture(scope="module")
def ours():
    return models.load_edge_pipeline()


def test_edge_pipeline_ddim_matches_diffusers(ours):
    subs = target_subjects()
    prompts = [subs[0].prompt, subs[17].prompt]
    ss = ours.unet.config.sample_size
    z_T = jax.random.normal(jax.random.key(3), (2, ss, ss, ours.unet.config.in_channels), jnp.float32)
    z_ours = np.asarray(text_to_latents(ours, prompts, jax.random.key(0), num_steps=STEPS, guidance_scale=GUIDANCE,
                                        latents=z_T))

    # The weights are stored in float16 (scripts/pretrain_common.SHIP_DTYPE). diffusers upcasts its
    # own models to float32 by default but transformers 5 keeps the stored dtype, so ask for float32
    # as our loader does.
    ref = diffusers.StableDiffusionPipeline.from_pretrained(models.edge_pipeline_dir(), dtype=torch.float32)
    assert isinstance(ref.scheduler, diffusers.DDIMScheduler)
    size = ss * ours.vae_scale_factor
    with torch.no_grad():
        z_ref = ref(prompts, height=size, width=size, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                    latents=torch.from_numpy(np.asarray(z_T).transpose(0, 3, 1, 2).copy()),
                    output_type="latent").images.numpy().transpose(0, 2, 3, 1)
    scale = float(np.abs(z_ref).max())
    assert scale > 0.1  # a real sample, not zeros
    np.testing.assert_allclose(z_ours, z_ref, atol=2e-3 * scale, rtol=0)

    with torch.no_grad():
        x_ref = ref.vae.decode(torch.from_numpy(z_ref.transpose(0, 3, 1, 2).copy()) / ref.vae.config.scaling_factor
                               ).sample.numpy().transpose(0, 2, 3, 1)
    x_ref = np.clip(x_ref / 2 + 0.5, 0, 1)
    x_ours = np.asarray(decode_latents(ours, jnp.asarray(z_ref)))
    np.testing.assert_allclose(x_ours, x_ref, atol=2e-3)


def test_judges_match_transformers():
    from dekag_jax.models.vit import NORMALIZATION

    j = models.load_judges()
    d = models.judge_dirs()
    imgs = render_batch([target_subjects()[4].prompt, target_subjects()[25].prompt], [11, 12], "cloud")
    d_ours, c_ours = gates.judge_features(j, imgs)

    def torch_input(family):
        mean, std = (np.asarray(v, np.float32) for v in NORMALIZATION[family])
        x = (imgs.astype(np.float32) / 255.0 - mean) / std  # already at image_size: no resize
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    vit = transformers.ViTModel.from_pretrained(d["dino"], add_pooling_layer=False, dtype=torch.float32).eval()
    clip = transformers.CLIPModel.from_pretrained(d["clip"], dtype=torch.float32).eval()
    with torch.no_grad():
        d_ref = vit(pixel_values=torch_input("dino")).last_hidden_state[:, 0].numpy()
        c_ref = clip.get_image_features(pixel_values=torch_input("clip"))
        c_ref = (c_ref.pooler_output if hasattr(c_ref, "pooler_output") else c_ref).numpy()
    d_ref /= np.linalg.norm(d_ref, axis=-1, keepdims=True)
    c_ref /= np.linalg.norm(c_ref, axis=-1, keepdims=True)
    np.testing.assert_allclose(d_ours, d_ref, atol=1e-4)
    np.testing.assert_allclose(c_ours, c_ref, atol=1e-4)


def test_shipped_pipeline_samples_in_diffusers_as_it_is():
    """The plain call a user tries first: no dtype argument. The weights are stored in float16;
    the shipped transformers configs say ``"dtype": "float32"`` so transformers 5 (which loads
    with ``dtype="auto"``: the config's dtype, else the stored one) upcasts like diffusers does,
    instead of failing with 'mat1 and mat2 must have the same dtype, Half and Float'."""
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(models.edge_pipeline_dir())
    assert {pipe.text_encoder.dtype, pipe.unet.dtype, pipe.vae.dtype} == {torch.float32}
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = pipe([target_subjects()[0].prompt], height=size, width=size, num_inference_steps=3,
               guidance_scale=GUIDANCE, output_type="np", generator=torch.Generator().manual_seed(0))
    img = out.images
    assert img.shape == (1, size, size, 3) and np.all(np.isfinite(img)) and img.std() > 0.01
    # the judges load plainly in float32 too
    d = models.judge_dirs()
    assert transformers.ViTModel.from_pretrained(d["dino"], add_pooling_layer=False).dtype == torch.float32
    assert transformers.CLIPModel.from_pretrained(d["clip"]).dtype == torch.float32
