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


# ----------------------------------------------------------------------------- eq. 5 consistency

from dekag_jax.metrics import (KID, consistency, consistency_from_images, fid, fid_from_features,  # noqa: E402
                               kid_from_features, pair_cosines, subject_scores)

R2 = np.sqrt(0.5)  # cos 45 degrees


def _hand_sets():
    """Two judges, two subjects in both sets, one subject only in A. Cosines by hand below."""
    dino_a = np.array([[1, 0], [0, 1], [3, 4], [5, 5]], float)   # subjects 0, 0, 1, 2
    clip_a = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0], [1, 1, 1]], float)
    dino_b = np.array([[1, 0], [2, 2], [4, 3]], float)            # subjects 0, 0, 1 (unnormalised on purpose)
    clip_b = np.array([[0, 0, 1], [1, 0, 0], [0, 2, 0]], float)
    return ({"dino": dino_a, "clip": clip_a}, np.array([0, 0, 1, 2]),
            {"dino": dino_b, "clip": clip_b}, np.array([0, 0, 1]))


def test_consistency_hand_computed():
    fa, la, fb, lb = _hand_sets()
    res = consistency(fa, la, fb, lb)
    per = res["per_subject"]
    assert sorted(per) == [0, 1]  # subject 2 is only in A
    # subject 0, pairs (a1,b1) (a1,b2) (a2,b1) (a2,b2): DINO 1, cos45, 0, cos45; CLIP 0, 1, 1, 0
    d0, c0 = [1, R2, 0, R2], [0, 1, 1, 0]
    t0 = [d + c for d, c in zip(d0, c0)]   # eq. 5's sum, per pair
    for name, vals in (("dino", d0), ("clip", c0), ("total", t0)):
        s = per[0][name]
        assert s.n_pairs == 4
        np.testing.assert_allclose([s.mean, s.std], [np.mean(vals), np.std(vals)], rtol=1e-12)
    np.testing.assert_allclose(per[0]["dino"].mean, (1 + 2 * R2) / 4, rtol=1e-12)
    np.testing.assert_allclose([per[0]["clip"].mean, per[0]["clip"].std], [0.5, 0.5], rtol=1e-12)
    # subject 1: (3,4)/5 . (4,3)/5 = 24/25; clip (0,1,0) . (0,1,0) = 1; one pair, std 0
    assert per[1]["dino"] .n_pairs == 1
    np.testing.assert_allclose([per[1]["dino"].mean, per[1]["clip"].mean, per[1]["total"].mean],
                               [24 / 25, 1.0, 24 / 25 + 1], rtol=1e-12)
    assert per[1]["dino"].std == 0.0
    # summaries: means over subjects of the per-subject means and stds
    np.testing.assert_allclose(res["dino"]["mean"], ((1 + 2 * R2) / 4 + 24 / 25) / 2, rtol=1e-12)
    np.testing.assert_allclose(res["total"]["mean"], (np.mean(t0) + 24 / 25 + 1) / 2, rtol=1e-12)
    np.testing.assert_allclose(res["clip"]["std"], (0.5 + 0.0) / 2, rtol=1e-12)
    # the single-judge form agrees
    assert subject_scores(fa["dino"], la, fb["dino"], lb)[0] == per[0]["dino"]


def test_consistency_ub_excludes_self_pairs():
    f = np.array([[1, 0], [0, 1], [1, 1]], float)
    # ordered pairs i != j: (0,1)=0, (0,2)=cos45, (1,2)=cos45, each twice; no self-pair (cosine 1)
    p = pair_cosines(f)
    np.testing.assert_allclose(np.sort(p), np.sort([0, 0, R2, R2, R2, R2]), atol=1e-15)
    res = consistency({"dino": f, "clip": f}, np.zeros(3, int))
    np.testing.assert_allclose(res["dino"]["mean"], 4 * R2 / 6, rtol=1e-12)
    np.testing.assert_allclose(res["total"]["mean"], 2 * 4 * R2 / 6, rtol=1e-12)
    assert res["per_subject"][0]["dino"].n_pairs == 6
    # with self-pairs the score would be higher: the exclusion matters
    assert pair_cosines(f, f).mean() > p.mean() + 0.1
    with pytest.raises(ValueError, match="at least 2 images"):
        pair_cosines(f[:1])


def test_consistency_from_images_uses_any_feature_function():
    rng = np.random.default_rng(1)
    imgs_a, imgs_b = rng.uniform(size=(6, 4, 4, 3)), rng.uniform(size=(5, 4, 4, 3))
    la, lb = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 0, 1, 1, 1])
    fns = {"dino": lambda x: x.reshape(len(x), -1), "clip": lambda x: x.mean(axis=(1, 2))}
    got = consistency_from_images(fns, imgs_a, la, imgs_b, lb, batch=4)  # batches of 4 + 2
    want = consistency({n: fn(imgs_a) for n, fn in fns.items()}, la, {n: fn(imgs_b) for n, fn in fns.items()}, lb)
    assert got == want


def test_consistency_bad_input_named():
    fa, la, fb, lb = _hand_sets()
    with pytest.raises(ValueError, match="no subject label"):
        consistency(fa, la, fb, lb + 10)
    with pytest.raises(ValueError, match="labels must be"):
        consistency(fa, la[:2], fb, lb)
    with pytest.raises(ValueError, match="judges differ"):
        consistency(fa, la, {"dino": fb["dino"]}, lb)
    with pytest.raises(ValueError, match="all zeros"):
        pair_cosines(np.zeros((2, 3)), np.ones((2, 3)))


# ----------------------------------------------------------------------------- FID and KID

def _fid_reference(a, b):
    """pytorch-fid's formula with SciPy's general sqrtm, float64."""
    import scipy.linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_matches_scipy_reference():
    rng = np.random.default_rng(0)
    d = 24
    mix = rng.normal(size=(d, d))
    a = rng.normal(size=(300, d)) @ mix
    b = 0.5 + rng.normal(size=(400, d)) @ (mix + 0.3 * rng.normal(size=(d, d)))
    want = _fid_reference(a, b)
    np.testing.assert_allclose(fid_from_features(a, b), want, rtol=1e-8)
    np.testing.assert_allclose(fid_from_features(a.astype(np.float32), b.astype(np.float32)),
                               _fid_reference(a.astype(np.float32).astype(np.float64),
                                              b.astype(np.float32).astype(np.float64)), rtol=1e-8)


def test_fid_hand_cases():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(fid_from_features(x, x)) < 1e-9 * scale           # identical sets
    delta = rng.normal(size=16)
    np.testing.assert_allclose(fid_from_features(x, x + delta), delta @ delta, rtol=1e-8)  # shifted mean
    # a rank-deficient covariance (fewer samples than dimensions) stays finite and non-negative
    assert 0 <= fid_from_features(x[:10], x[10:30] + 1) < np.inf
    # any feature function over images, batched
    imgs = rng.uniform(size=(40, 4, 4, 3))
    f = lambda im: im.reshape(len(im), -1)[:, :8]  # noqa: E731
    np.testing.assert_allclose(fid(f, imgs, imgs[::-1] * 2, batch=16), fid_from_features(f(imgs), f(imgs[::-1] * 2)),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="widths differ"):
        fid_from_features(x, x[:, :3])


def _kid_reference(a, b, m, n_sub, seed):
    """Unbiased MMD^2 with explicit loops over i != j, same subset draws."""
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    vals = []
    for _ in range(n_sub):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
        vals.append(kxx + kyy - 2 * kxy)
    return np.mean(vals), np.std(vals)


def test_kid_matches_loop_reference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(30, 5)), rng.normal(0.3, 1.2, size=(25, 5))
    got = kid_from_features(a, b, subset_size=12, num_subsets=4, seed=7)
    assert isinstance(got, KID) and got.subset_size == 12 and got.num_subsets == 4
    np.testing.assert_allclose([got.mean, got.std], _kid_reference(a, b, 12, 4, 7), rtol=1e-10)


def test_kid_same_vs_shifted_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same = kid_from_features(a, b, subset_size=100, num_subsets=50, seed=0)
    shifted = kid_from_features(a, b + 1.0, subset_size=100, num_subsets=50, seed=0)
    assert abs(same.mean) < 3 * same.std           # unbiased: zero in expectation
    assert shifted.mean > 20 * max(same.std, abs(same.mean))
    assert kid_from_features(a, b, num_subsets=2).subset_size == 400  # default min(1000, Na, Nb)
    with pytest.raises(ValueError, match="subset_size=500"):
        kid_from_features(a, b, subset_size=500)
