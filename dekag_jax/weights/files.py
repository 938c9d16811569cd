"""Finding and reading checkpoint files of one model component (safetensors only).

A component directory is what diffusers/transformers ``save_pretrained`` writes: a
``config.json`` and weights in one of

    diffusion_pytorch_model[.<variant>].safetensors        (diffusers)
    model[.<variant>].safetensors                         (transformers)
    <either>[.<variant>].safetensors.index.json + shards  (sharded)

Pickle-based files (``.bin``, ``.pt``, ``.ckpt``, ``.pth``) are refused, never opened: loading
them executes arbitrary code.
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


def read_config(component_dir: str) -> dict[str, Any]:
    path = os.path.join(component_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"{component_dir}: no config.json (is this a diffusers/transformers component directory?)")
    with open(path) as f:
        return json.load(f)


def find_weight_files(component_dir: str, variant: str | None = None) -> list[str]:
    """Paths of the safetensors file(s) holding this component's weights.

    ``variant`` (e.g. ``"fp16"``) selects ``<stem>.<variant>.safetensors``; when absent, the plain
    file is used. Raises CheckpointError if only pickle files exist, or nothing at all.
    """
    if not os.path.isdir(component_dir):
        raise CheckpointError(f"{component_dir}: directory does not exist")
    names = set(os.listdir(component_dir))
    mid = f".{variant}" if variant else ""
    for stem in WEIGHT_STEMS:
        single = f"{stem}{mid}.safetensors"
        if single in names:
            return [os.path.join(component_dir, single)]
        index = f"{stem}{mid}.safetensors.index.json"
        if index in names:
            with open(os.path.join(component_dir, index)) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            missing = [s for s in shards if s not in names]
            if missing:
                raise CheckpointError(f"{component_dir}: {index} names shards that are absent: {missing}")
            return [os.path.join(component_dir, s) for s in shards]
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{component_dir}: only pickle-based weights found ({', '.join(pickles)}). dekag_jax reads "
            "safetensors only, because unpickling runs arbitrary code. Convert once with a trusted "
            "PyTorch install, e.g. `model.save_pretrained(dir, safe_serialization=True)`.")
    if variant:
        others = sorted(n for n in names if n.endswith(".safetensors"))
        raise CheckpointError(f"{component_dir}: no weights for variant {variant!r}; safetensors present: {others}")
    raise CheckpointError(f"{component_dir}: no weights file ({' or '.join(s + '.safetensors' for s in WEIGHT_STEMS)})")


class LazyStateDict(Mapping):
    """Read-only ``{key: np.ndarray}`` over safetensors files, loading one tensor per access.

    Lets a converter stream a large checkpoint (SD2.1's UNet is 3.5 GB in fp32) without holding
    the PyTorch-layout copy and the Flax-layout copy of every tensor at once. bf16 tensors are
    returned as ``ml_dtypes.bfloat16`` numpy arrays.
    """

    def __init__(self, files: list[str]):
        from safetensors import safe_open

        self._files = list(files)
        self._handles = [safe_open(f, framework="numpy") for f in files]
        self._where: dict[str, int] = {}
        for i, h in enumerate(self._handles):
            for k in h.keys():
                if k in self._where:
                    raise CheckpointError(f"tensor {k!r} appears in two shards: {files[self._where[k]]}, {files[i]}")
                self._where[k] = i

    def __getitem__(self, key: str) -> np.ndarray:
        i = self._where[key]
        try:
            return self._handles[i].get_tensor(key)
        except TypeError:  # bfloat16: numpy has no such dtype; read through JAX on the host CPU
            import jax
            from safetensors import safe_open

            with jax.default_device(jax.devices("cpu")[0]):
                return np.asarray(safe_open(self._files[i], framework="flax").get_tensor(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def read_state_dict(component_dir: str, variant: str | None = None) -> LazyStateDict:
    return LazyStateDict(find_weight_files(component_dir, variant))


def save_state_dict(state: Mapping[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
    """Write ``{key: array}`` as one safetensors file (PyTorch-loadable)."""
    from safetensors.numpy import save_file

    # np.asarray(order="C"), not ascontiguousarray: that one turns 0-d tensors into shape (1,)
    save_file({k: np.asarray(v, order="C") for k, v in state.items()}, path, metadata=metadata)
    # safetensors creates the file 0600; give it the usual mode (0666 less the umask), as open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
