import numpy as np
import pytest

from dekag_jax.metrics import psnr


def test_psnr_matches_definition_per_image():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(scale=0.05, size=x.shape), 0, 1).astype(np.float32)
    want = [10 * np.log10(1.0 / np.mean((x[i] - y[i]) ** 2)) for i in range(3)]
    np.testing.assert_allclose(np.asarray(psnr(x, y)), want, rtol=1e-5)
    u8 = (x * 255).round().astype(np.uint8)
    assert np.isinf(np.asarray(psnr(u8, u8, data_range=255.0))).all()


def test_psnr_shape_mismatch_named():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((2, 4, 4, 3)), np.zeros((2, 4, 4, 1)))
