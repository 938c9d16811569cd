"""weights/abstract.py: the cached abstract parameter tree equals a fresh ``eval_shape`` of init,
from memory and from disk, and a broken or disabled disk cache only costs the trace."""
import jax
import numpy as np
import pytest

from dekag_jax.models.vae import AutoencoderKL, VAEConfig
from dekag_jax.weights import abstract
from dekag_jax.weights.convert import flatten

TINY = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
            latent_channels=4, norm_num_groups=4, sample_size=16)


def _specs(tree):
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flatten(tree).items()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEKAG_JAX_CACHE_DIR", str(tmp_path))
    abstract.clear_memory_cache()
    yield tmp_path / "param_shapes"
    abstract.clear_memory_cache()


def _truth(module):
    return _specs(jax.eval_shape(module.init, jax.random.PRNGKey(0), *module.dummy_inputs())["params"])


def test_memory_and_disk_cache_equal_eval_shape(cache):
    vae = AutoencoderKL(VAEConfig.from_hf(TINY))
    truth = _truth(vae)
    assert _specs(abstract.abstract_params(vae, *vae.dummy_inputs())) == truth  # traced, written
    files = list(cache.glob("AutoencoderKL-*.json"))
    assert len(files) == 1
    assert _specs(abstract.abstract_params(vae, *vae.dummy_inputs())) == truth  # memory
    abstract.clear_memory_cache()
    assert _specs(abstract.abstract_params(vae, *vae.dummy_inputs())) == truth  # disk


def test_config_change_is_a_different_entry(cache):
    a = AutoencoderKL(VAEConfig.from_hf(TINY))
    b = AutoencoderKL(VAEConfig.from_hf({**TINY, "latent_channels": 8}))
    sa = _specs(abstract.abstract_params(a, *a.dummy_inputs()))
    sb = _specs(abstract.abstract_params(b, *b.dummy_inputs()))
    assert sa != sb and sb == _truth(b)
    assert len(list(cache.glob("*.json"))) == 2


def test_corrupt_entry_is_retraced(cache):
    vae = AutoencoderKL(VAEConfig.from_hf(TINY))
    abstract.abstract_params(vae, *vae.dummy_inputs())
    (f,) = cache.glob("*.json")
    f.write_text("{not json")
    abstract.clear_memory_cache()
    assert _specs(abstract.abstract_params(vae, *vae.dummy_inputs())) == _truth(vae)


def test_disabled_disk_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DEKAG_JAX_CACHE_DIR", "off")
    abstract.clear_memory_cache()
    assert abstract.cache_dir() is None
    vae = AutoencoderKL(VAEConfig.from_hf(TINY))
    assert _specs(abstract.abstract_params(vae, *vae.dummy_inputs())) == _truth(vae)
    abstract.clear_memory_cache()
