"""Sharded and variant weights exactly as diffusers and transformers ``save_pretrained`` write them.

Every layout is written by the libraries themselves (``variant=``, ``max_shard_size=``) and must
load to the very same parameters as the plain unsharded directory (whose outputs test_pipeline
and the parity tests compare with PyTorch). Broken indexes are one clear error each.
"""
import json
import os
import shutil

import numpy as np
import pytest

import jax

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from test_pipeline import build_tiny_pipeline  # noqa: E402

from dekag_jax.weights.files import CheckpointError, find_weights  # noqa: E402
from dekag_jax.weights.hf import load_clip_model, load_dino  # noqa: E402
from dekag_jax.weights.pipeline import load_pipeline  # noqa: E402

UNET = "diffusion_pytorch_model"


def _same(a, b):
    fa, fb = jax.tree_util.tree_flatten_with_path(a), jax.tree_util.tree_flatten_with_path(b)
    assert [p for p, _ in fa[0]] == [p for p, _ in fb[0]]
    for (path, x), (_, y) in zip(fa[0], fb[0]):
        assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sharded"))
    ref, path = build_tiny_pipeline(root)
    plain = load_pipeline(path, components=("unet", "vae", "text_encoder"))
    return dict(root=root, ref=ref, path=path, plain=plain)


def _pipe_params(p):
    return (p.unet_params, p.vae_params, p.text_params)


@pytest.mark.parametrize("variant,shard", [(None, "50KB"), ("fp16", "10GB"), ("fp16", "50KB")])
def test_pipeline_layouts_load_like_unsharded(sd, variant, shard):
    d = os.path.join(sd["root"], f"pipe_{variant}_{shard}")
    sd["ref"].save_pretrained(d, safe_serialization=True, variant=variant, max_shard_size=shard)
    names = {c: set(os.listdir(os.path.join(d, c))) for c in ("unet", "vae", "text_encoder")}
    mid = f".{variant}" if variant else ""
    if shard == "50KB":  # the names the libraries write (checked here so a rename upstream shows)
        assert f"{UNET}.safetensors.index{mid}.json" in names["unet"]
        assert f"{UNET}{mid}-00001-of-" in " ".join(sorted(names["unet"]))
        assert f"model.safetensors.index{mid}.json" in names["text_encoder"]
        assert sum(n.startswith(f"model{mid}-0000") for n in names["text_encoder"]) >= 2
    else:
        assert f"{UNET}{mid}.safetensors" in names["unet"] and f"model{mid}.safetensors" in names["text_encoder"]
    got = load_pipeline(d, variant=variant, components=("unet", "vae", "text_encoder"))
    _same(_pipe_params(got), _pipe_params(sd["plain"]))


@pytest.mark.filterwarnings("ignore:This serialization format is now deprecated:FutureWarning")
def test_legacy_diffusers_variant_index_name(sd, tmp_path):
    """diffusers < 0.27 wrote ``<stem>.safetensors.<variant>.index.json``; diffusers still reads it."""
    d = str(tmp_path / "unet")
    sd["ref"].unet.save_pretrained(d, variant="fp16", max_shard_size="50KB")
    os.rename(os.path.join(d, f"{UNET}.safetensors.index.fp16.json"),
              os.path.join(d, f"{UNET}.safetensors.fp16.index.json"))
    files, wm = find_weights(d, "fp16")
    assert wm is not None and len(files) > 2
    from dekag_jax.weights.sd import load_unet

    _same(load_unet(d, variant="fp16")[1], sd["plain"].unet_params)
    # the reference reads the same directory (proves the legacy name is one diffusers knows)
    ref = diffusers.UNet2DConditionModel.from_pretrained(d, variant="fp16")
    k = "conv_in.weight"
    assert torch.equal(ref.state_dict()[k], sd["ref"].unet.state_dict()[k])


def _tiny_clip():
    torch.manual_seed(3)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, eos_token_id=3),
        vision_config=dict(intermediate_size=48, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8), projection_dim=24)
    return transformers.CLIPModel(cfg), load_clip_model


def _tiny_dino():
    torch.manual_seed(4)
    return transformers.ViTModel(transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                        intermediate_size=48, image_size=32, patch_size=8),
                                 add_pooling_layer=False), load_dino


def _tiny_dinov2():
    torch.manual_seed(5)
    return transformers.Dinov2Model(transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2, image_size=32, patch_size=8)), load_dino


@pytest.mark.parametrize("build", [_tiny_clip, _tiny_dino, _tiny_dinov2], ids=["clip", "dino", "dinov2"])
def test_judges_sharded_variant(build, tmp_path):
    model, load = build()
    model.save_pretrained(str(tmp_path / "plain"))
    model.save_pretrained(str(tmp_path / "sharded"), variant="fp16", max_shard_size="50KB")
    names = os.listdir(tmp_path / "sharded")
    assert "model.safetensors.index.fp16.json" in names and sum(n.startswith("model.fp16-0") for n in names) >= 2
    _same(load(str(tmp_path / "sharded"), variant="fp16")[1], load(str(tmp_path / "plain"))[1])
    with pytest.raises(CheckpointError, match=r"no weights for variant 'fp16'.*model.safetensors.index.fp16.json"):
        load(str(tmp_path / "plain"), variant="fp16")


def _sharded_unet(sd, tmp_path):
    d = str(tmp_path / "unet")
    sd["ref"].unet.save_pretrained(d, max_shard_size="50KB")
    index_path = os.path.join(d, f"{UNET}.safetensors.index.json")
    with open(index_path) as f:
        return d, index_path, json.load(f)


def _write(path, index):
    with open(path, "w") as f:
        json.dump(index, f)


def test_index_errors(sd, tmp_path):
    from dekag_jax.weights.sd import load_unet

    d, index_path, index = _sharded_unet(sd, tmp_path)
    wm = index["weight_map"]
    # a shard holding several tensors, so that it stays in the index when one of its keys is dropped
    first = next(s for s in sorted(set(wm.values())) if list(wm.values()).count(s) > 1)
    # a shard the index names is gone
    shutil.move(os.path.join(d, first), str(tmp_path / "aside"))
    with pytest.raises(CheckpointError, match=rf"names shards that are absent: \['{first}'\]"):
        load_unet(d)
    shutil.move(str(tmp_path / "aside"), os.path.join(d, first))
    # a shard holds a key the index does not list
    dropped = next(k for k, v in wm.items() if v == first)
    _write(index_path, {**index, "weight_map": {k: v for k, v in wm.items() if k != dropped}})
    with pytest.raises(CheckpointError,
                       match=rf"shards and index disagree \(1\): '{dropped}' in {first} is not in the index"):
        load_unet(d)
    # the index lists a key no shard holds, and a key in the wrong shard
    other = next(s for s in sorted(set(wm.values())) if s != first)
    _write(index_path, {**index, "weight_map": {**wm, "ghost.weight": first, dropped: other}})
    with pytest.raises(CheckpointError, match=r"disagree \(2\).*is in .* but the index says .*'ghost.weight' listed"):
        load_unet(d)
    # a shard name that is a path
    _write(index_path, {**index, "weight_map": {**wm, dropped: "../" + first}})
    with pytest.raises(CheckpointError, match="plain .safetensors file names"):
        load_unet(d)
    _write(index_path, {"metadata": {}})
    with pytest.raises(CheckpointError, match="weight_map"):
        load_unet(d)


def test_pickle_shards_refused_with_conversion_recipe(tmp_path):
    d = tmp_path / "unet"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / f"{UNET}.bin.index.json").write_text(json.dumps({"weight_map": {"a": f"{UNET}-00001-of-00001.bin"}}))
    (d / f"{UNET}-00001-of-00001.bin").write_bytes(b"never unpickled")
    with pytest.raises(CheckpointError, match=r"(?s)pickle.*weights_only=True.*safetensors.torch.save_file"):
        find_weights(str(d))
