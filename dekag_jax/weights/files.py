"""Finding and reading checkpoint files of one model component (safetensors only).

A component directory is what diffusers/transformers ``save_pretrained`` writes: a
``config.json`` and weights in one of these layouts (``<stem>`` is ``diffusion_pytorch_model`` for
diffusers models, ``model`` for transformers models; ``<v>`` a variant such as ``fp16``):

    <stem>.safetensors                                  unsharded
    <stem>.<v>.safetensors                              unsharded variant
    <stem>.safetensors.index.json                       sharded: shards <stem>-00001-of-0000N.safetensors
    <stem>.safetensors.index.<v>.json                   sharded variant: shards <stem>.<v>-00001-of-0000N.safetensors
    <stem>.safetensors.<v>.index.json                   sharded variant, diffusers < 0.27 (still read by
                                                        diffusers as "legacy_sharded_ckpts_with_variant")

These are the names both libraries derive with their ``_add_variant`` (diffusers
``utils/hub_utils.py``, transformers ``modeling_utils.py``: the variant goes before the last
suffix) and write in ``save_pretrained(dir, variant=..., max_shard_size=...)``. The shard names
are taken from the index's ``weight_map``, never guessed; the index must name exactly the keys
its shards hold (a missing shard, a shard key absent from the index or an index key absent from
its shard is one clear error).

Pickle-based files (``.bin``, ``.pt``, ``.ckpt``, ``.pth``) are refused, never opened: loading
them executes arbitrary code. :func:`pickle_advice` says how to convert them once with the
user's own trusted PyTorch.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

WEIGHT_STEMS = ("diffusion_pytorch_model", "model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(FileNotFoundError):
    """A component directory is missing, incomplete, or holds only refused formats."""


def pickle_advice(path: str) -> str:
    """The conversion recipe for a pickle checkpoint, run once with the user's own trusted torch."""
    out = os.path.splitext(path)[0] + ".safetensors"
    return (f"dekag_jax reads safetensors only, because unpickling {os.path.basename(path)} could run "
            f"arbitrary code. If you trust the file, convert it once with your own PyTorch:\n"
            f"    import torch, safetensors.torch\n"
            f"    sd = torch.load({path!r}, map_location='cpu', weights_only=True)\n"
            f"    safetensors.torch.save_file({{k: v.contiguous() for k, v in sd.get('state_dict', sd).items() "
            f"if isinstance(v, torch.Tensor)}}, {out!r})\n"
            f"(a diffusers/transformers model can instead be re-saved with "
            f"`model.save_pretrained(dir, safe_serialization=True)`).")


def read_config(component_dir: str) -> dict[str, Any]:
    path = os.path.join(component_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{component_dir}: no config.json (is this a diffusers/transformers component directory?)")
    with open(path) as f:
        return json.load(f)


def weight_file_names(stem: str, variant: str | None = None) -> tuple[str, tuple[str, ...]]:
    """``(unsharded file name, index file names in order of preference)`` for ``stem`` and ``variant``."""
    if not variant:
        return f"{stem}.safetensors", (f"{stem}.safetensors.index.json",)
    return (f"{stem}.{variant}.safetensors",
            (f"{stem}.safetensors.index.{variant}.json", f"{stem}.safetensors.{variant}.index.json"))


def _read_index(component_dir: str, index: str, names: set[str]) -> dict[str, str]:
    """The ``weight_map`` ({tensor key: shard file}) of an index, checked against the directory."""
    path = os.path.join(component_dir, index)
    try:
        with open(path) as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a safetensors index (expected JSON with a 'weight_map'): {e}") from e
    shards = sorted(set(weight_map.values()))
    bad = [s for s in shards if os.path.basename(s) != s or not s.endswith(".safetensors")]
    if bad:  # a path, or a pickle shard: neither is read
        raise CheckpointError(f"{path}: shard names must be plain .safetensors file names in {component_dir}; "
                              f"got {bad}")
    missing = [s for s in shards if s not in names]
    if missing:
        raise CheckpointError(f"{path}: names shards that are absent: {missing}")
    return weight_map


def find_weights(component_dir: str, variant: str | None = None) -> tuple[list[str], dict[str, str] | None]:
    """``(weight files, weight_map or None)`` of this component: see the module docstring for the
    layouts. Raises CheckpointError if only pickle files exist, or nothing matching at all."""
    if not os.path.isdir(component_dir):
        raise CheckpointError(f"{component_dir}: directory does not exist")
    names = set(os.listdir(component_dir))
    for stem in WEIGHT_STEMS:
        single, indexes = weight_file_names(stem, variant)
        if single in names:
            return [os.path.join(component_dir, single)], None
        for index in indexes:
            if index in names:
                weight_map = _read_index(component_dir, index, names)
                shards = sorted(set(weight_map.values()))
                return [os.path.join(component_dir, s) for s in shards], weight_map
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) or n.endswith(".bin.index.json")
                     or (variant and n.endswith(f".bin.index.{variant}.json")))
    if pickles:
        raise CheckpointError(f"{component_dir}: only pickle-based weights found ({', '.join(pickles)}). "
                              + pickle_advice(os.path.join(component_dir, pickles[0])))
    looked = [n for stem in WEIGHT_STEMS for single, indexes in [weight_file_names(stem, variant)]
              for n in (single, *indexes)]
    others = sorted(n for n in names if n.endswith((".safetensors", ".json")) and n != "config.json")
    if variant:
        raise CheckpointError(f"{component_dir}: no weights for variant {variant!r} (looked for {looked}); "
                              f"weight files present: {others}")
    raise CheckpointError(f"{component_dir}: no weights file (looked for {looked}); weight files present: {others}")


def find_weight_files(component_dir: str, variant: str | None = None) -> list[str]:
    """Paths of the safetensors file(s) holding this component's weights (see :func:`find_weights`)."""
    return find_weights(component_dir, variant)[0]


class LazyStateDict(Mapping):
    """Read-only ``{key: np.ndarray}`` over safetensors files, loading one tensor per access.

    Lets a converter stream a large checkpoint (SD2.1's UNet is 3.5 GB in fp32) without holding
    the PyTorch-layout copy and the Flax-layout copy of every tensor at once. bf16 tensors are
    returned as ``ml_dtypes.bfloat16`` numpy arrays.
    """

    def __init__(self, files: list[str], weight_map: Mapping[str, str] | None = None):
        """``weight_map``: the shard index ({key: shard file name}); when given, every shard must
        hold exactly the keys the index assigns to it."""
        from safetensors import safe_open

        self._files = list(files)
        self._handles = [safe_open(f, framework="numpy") for f in files]
        self._where: dict[str, int] = {}
        for i, h in enumerate(self._handles):
            for k in h.keys():
                if k in self._where:
                    raise CheckpointError(f"tensor {k!r} appears in two shards: {files[self._where[k]]}, {files[i]}")
                self._where[k] = i
        if weight_map is not None:
            problems = []
            for k, i in self._where.items():
                shard = os.path.basename(self._files[i])
                if k not in weight_map:
                    problems.append(f"{k!r} in {shard} is not in the index")
                elif weight_map[k] != shard:
                    problems.append(f"{k!r} is in {shard} but the index says {weight_map[k]}")
            problems += [f"{k!r} listed in the index is absent from {f}" for k, f in weight_map.items()
                         if k not in self._where]
            if problems:
                raise CheckpointError(f"{os.path.dirname(self._files[0])}: shards and index disagree "
                                      f"({len(problems)}): " + "; ".join(problems[:20])
                                      + (" ..." if len(problems) > 20 else ""))

    def __getitem__(self, key: str) -> np.ndarray:
        i = self._where[key]
        try:
            return self._handles[i].get_tensor(key)
        except TypeError:  # bfloat16: numpy has no such dtype; read through JAX on the host CPU
            import jax
            from safetensors import safe_open

            with jax.default_device(jax.devices("cpu")[0]):
                return np.asarray(safe_open(self._files[i], framework="flax").get_tensor(key))

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape, read from the header (no data loaded)."""
        return tuple(self._handles[self._where[key]].get_slice(key).get_shape())

    def metadata(self) -> dict[str, str]:
        """The first file's safetensors metadata (``{}`` when there is none)."""
        return dict(self._handles[0].metadata() or {}) if self._handles else {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def read_state_dict(component_dir: str, variant: str | None = None) -> LazyStateDict:
    """The component's weights (any layout of the module docstring) as one lazy state dict."""
    return LazyStateDict(*find_weights(component_dir, variant))


def save_state_dict(state: Mapping[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``{key: array}`` as one safetensors file (PyTorch-loadable)."""
    from safetensors.numpy import save_file

    # np.asarray(order="C"), not ascontiguousarray: that one turns 0-d tensors into shape (1,)
    save_file({k: np.asarray(v, order="C") for k, v in state.items()}, path, metadata=metadata)
    # safetensors creates the file 0600; give it the usual mode (0666 less the umask), as open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
