"""LoRA (and CALA, eq. 10) for any flax.linen model, by regex over parameter paths.

Data contract (shared with ``dekag_jax.weights.adapters``, the file import/export):

* **Base params**: a model's params tree, ``{"params": {...}}`` or the inner dict. A path is the
  "/"-joined key path inside ``params`` (``down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/kernel``).
* **Adapter params** (what trains and what is exported): ``{path_of_base_kernel: {"lora_A": A,
  "lora_B": B}}``, for CALA plus the gate's leaves (``gate_*``; default form ``"gate_kernel" [3, R]``,
  ``"gate_bias" [R]``, other forms in ``dekag_jax.adapt.cala``). Layouts (Flax):
    Dense kernel ``[in, out]``: ``lora_A [in, r]``, ``lora_B [r, out]``; ``y += (alpha/r)·x A B``.
    Conv kernel ``[kh, kw, in, out]``: ``lora_A [kh, kw, in, r]`` (a conv with the base kernel's
    size, strides, padding and dilation, to r channels), ``lora_B [1, 1, r, out]`` (a 1x1 conv).
  B is zero-initialised, A as PEFT's ``reset_lora_parameters`` (``kaiming_uniform_(a=sqrt(5))``,
  i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in·kh·kw).
* **Spec** (static, not a pytree leaf): ``{path: LoraSpec(path, kind, rank, alpha, gate)}``; ``gate``
  is CALA's gate form (``cala.GATE_FORMS``, default ``"sigmoid2"``), unused by plain LoRA adapters.

Two ways to apply, both pure functions of (base params, adapter params[, phi]) that jit, vmap and
shard:

* ``merge`` (deployment): ``W' = W + (alpha/r)·A B`` (conv: ``einsum('hwir,ro->hwio', A, B[0, 0])``).
  ``unmerge`` subtracts the same update. Exactness: both are one fused add in the parameter dtype,
  so ``unmerge(merge(W))`` equals W within one ulp of ``|W| + |dW|`` (measured: 81% of the
  elements bit-exact, worst 1e-7 of max |W|; tested). When bit-exactness matters keep the base tree: everything here is functional,
  ``merge`` never modifies its input, so the original W is still there.
* ``apply`` / ``attach`` (unmerged, intercepted): ``flax.linen.intercept_methods`` adds the low-rank
  path beside every matched ``nn.Dense``/``nn.Conv`` call, identified by its module path
  (``module.path`` joined with "/", plus ``/kernel``). The base weights are untouched, and CALA's
  per-sample gates are applied to the rank-R hidden activation: ``h = x A``, ``h *= g(phi_b)``
  (broadcast over spatial/token axes), ``y += (alpha/r)·h B``. No per-sample weight is ever
  materialised. It attaches to every model in ``dekag_jax.models`` (all their linear maps are
  ``nn.Dense``/``nn.Conv``) without editing them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import zlib
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from dekag_jax.adapt import cala
from dekag_jax.adapt.rules import Rule, as_rule, match_paths, tree_paths
from dekag_jax.weights.convert import SEP, unflatten

__all__ = ["LoraSpec", "make_specs", "init", "delta", "merge", "unmerge", "apply", "attach",
           "adapter_shapes", "lora_param_count"]


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Static description of one adapted kernel: its path, ``kind`` ("dense" or "conv"), rank,
    alpha (scale = alpha / rank) and, for CALA adapters, the gate form (``cala.GATE_FORMS``)."""

    path: str
    kind: str
    rank: int
    alpha: float
    gate: str = cala.DEFAULT_GATE

    def __post_init__(self):
        if self.kind not in ("dense", "conv"):
            raise ValueError(f"LoraSpec {self.path!r}: kind must be 'dense' or 'conv', got {self.kind!r}")
        cala.check_form(self.gate)

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank


def _kind(shape: tuple[int, ...]) -> str | None:
    return {2: "dense", 4: "conv"}.get(len(shape))


def _max_rank(shape) -> int:
    """min(in, out) for Dense; min(kh·kw·in, out) for Conv: beyond it B·A is no longer low rank."""
    if len(shape) == 2:
        return min(shape)
    kh, kw, cin, cout = shape
    return min(kh * kw * cin, cout)


def adapter_shapes(kernel_shape: Sequence[int], rank: int) -> dict[str, tuple[int, ...]]:
    """Shapes of ``lora_A`` and ``lora_B`` for a kernel of ``kernel_shape`` (see the contract)."""
    kernel_shape = tuple(int(s) for s in kernel_shape)
    if len(kernel_shape) == 2:
        return {"lora_A": (kernel_shape[0], rank), "lora_B": (rank, kernel_shape[1])}
    if len(kernel_shape) == 4:
        kh, kw, cin, cout = kernel_shape
        return {"lora_A": (kh, kw, cin, rank), "lora_B": (1, 1, rank, cout)}
    raise ValueError(f"LoRA needs a Dense [in, out] or Conv [kh, kw, in, out] kernel, got shape {kernel_shape}")


def lora_param_count(kernel_shape: Sequence[int], rank: int) -> int:
    """Parameters of A and B for one kernel: r·(in + out), conv r·(kh·kw·in + out)."""
    return sum(math.prod(s) for s in adapter_shapes(kernel_shape, rank).values())


def make_specs(params: Mapping[str, Any], rules: Sequence[Rule | tuple], *,
               clamp_rank: bool = False) -> dict[str, LoraSpec]:
    """``{path: LoraSpec}`` for every kernel some rule matches (full match, first rule wins).

    Only ``.../kernel`` leaves of rank 2 (Dense) or 4 (Conv) are candidates. One ValueError lists
    every problem: a rule that matches no kernel (naming the rule), and every kernel whose
    rule's rank exceeds min(in, out) (conv: min(kh·kw·in, out)). ``params`` may hold arrays or
    ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``). ``clamp_rank=True`` instead lowers such a
    kernel's rank to its maximum (alpha scaled along, keeping alpha/rank), e.g. SD's ``conv_out``
    (3x3, 320 -> 4 channels) under a blanket rank-8 rule.
    """
    rules = [as_rule(r) for r in rules]
    if not rules:
        raise ValueError("no LoRA rules given")
    flat = tree_paths(params)
    kernels = {p: tuple(v.shape) for p, v in flat.items()
               if p.rsplit(SEP, 1)[-1] == "kernel" and _kind(tuple(v.shape)) is not None}
    patterns = [r.pattern for r in rules]
    errors: list[str] = []
    try:
        hits = match_paths(kernels, patterns, what="LoRA rules over Dense/Conv kernels")
    except ValueError as e:
        errors.append(str(e))
        hits = match_paths(kernels, patterns, require_all=False)
    specs: dict[str, LoraSpec] = {}
    for path, i in hits.items():
        r, shape = rules[i], kernels[path]
        rank, alpha = r.rank, float(r.alpha) if r.alpha is not None else float(r.rank)
        if rank > _max_rank(shape):
            if not clamp_rank:
                errors.append(f"rule {r.pattern!r}: rank {r.rank} > {_max_rank(shape)} for {path} {shape}")
                continue
            rank, alpha = _max_rank(shape), alpha * _max_rank(shape) / rank
        specs[path] = LoraSpec(path, _kind(shape), rank, alpha)
    if errors:
        raise ValueError("; ".join(errors))
    return specs


def _path_key(key: jax.Array, path: str) -> jax.Array:
    # A per-path stream (crc32 of the path): A does not change when rules add or drop other layers.
    return jax.random.fold_in(key, zlib.crc32(path.encode()) & 0x7FFFFFFF)


def init(key: jax.Array, params: Mapping[str, Any], rules: Sequence[Rule | tuple] | Mapping[str, LoraSpec], *,
         gates: bool = False, dtype: Any = jnp.float32) -> tuple[dict[str, dict[str, jax.Array]], dict[str, LoraSpec]]:
    """New adapters ``(adapters, specs)``: A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PEFT's
    kaiming_uniform with a = sqrt(5)), B = 0, so the adapted model starts equal to the base.

    rules: LoRA rules (see ``make_specs``) or an existing ``{path: LoraSpec}``. ``gates=True`` adds
    CALA's gate of each spec's form (``cala.init_gate``: g = 1 at init) to every adapter.
    """
    specs = dict(rules) if isinstance(rules, Mapping) else make_specs(params, rules)
    flat = tree_paths(params)
    adapters: dict[str, dict[str, jax.Array]] = {}
    for path, spec in specs.items():
        if path not in flat:
            raise ValueError(f"LoRA spec {path!r}: no such parameter in the base params")
        shapes = adapter_shapes(flat[path].shape, spec.rank)
        fan_in = math.prod(shapes["lora_A"][:-1])
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(_path_key(key, path), shapes["lora_A"], jnp.float32, -bound, bound).astype(dtype)
        ad = {"lora_A": a, "lora_B": jnp.zeros(shapes["lora_B"], dtype)}
        if gates:
            # the mlp form's random hidden layer: its own stream, independent of A's
            ad.update(cala.init_gate(spec.rank, dtype, form=spec.gate,
                                     key=jax.random.fold_in(_path_key(key, path), 1)))
        adapters[path] = ad
    return adapters, specs


def _gate(adapter: Mapping[str, jax.Array], phi: jax.Array | None, form: str = cala.DEFAULT_GATE) -> jax.Array | None:
    """g(phi) for a CALA adapter, None for plain LoRA. A CALA adapter needs phi."""
    has_gate = "gate_kernel" in adapter
    if not has_gate:
        return None
    if phi is None:
        raise ValueError("a CALA adapter (with gate_kernel) needs phi (normalised condition, [..., 3]); "
                         "see dekag_jax.adapt.cala.normalise_phi")
    return cala.gate_values(adapter, phi, form)


def delta(adapter: Mapping[str, jax.Array], spec: LoraSpec, phi: jax.Array | None = None) -> jax.Array:
    """The kernel update ``(alpha/r)·A diag(g) B`` in the base kernel's layout, float32.

    For a CALA adapter ``phi`` is ONE normalised condition ``[3]`` (merging per-sample gates
    would need a weight copy per sample; use ``apply`` for mixed batches).
    """
    a = adapter["lora_A"].astype(jnp.float32)
    b = adapter["lora_B"].astype(jnp.float32)
    g = _gate(adapter, phi, spec.gate)
    if g is not None:
        if g.ndim != 1:
            raise ValueError(f"merging a CALA adapter needs one condition phi [3], got g of shape {g.shape}")
        b = b * g.reshape((-1, 1) if spec.kind == "dense" else (1, 1, -1, 1))
    if spec.kind == "dense":
        return spec.scale * (a @ b)
    return spec.scale * jnp.einsum("hwir,ro->hwio", a, b[0, 0])


def _rebuild(params: Mapping[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    inner = unflatten(flat)
    wrapped = set(params.keys()) == {"params"} and isinstance(params["params"], Mapping)
    return {"params": inner} if wrapped else inner


def _merge(params, adapters, specs, phi, sign):
    _check(adapters, specs)
    flat = dict(tree_paths(params))
    missing = [p for p in specs if p not in flat]
    if missing:
        raise ValueError(f"LoRA specs name kernels missing from the params: {missing[:20]}")
    for path, spec in specs.items():
        w = flat[path]
        dw = delta(adapters[path], spec, phi)
        if dw.shape != w.shape:
            raise ValueError(f"LoRA {path}: update shape {dw.shape} != kernel shape {w.shape}")
        flat[path] = (jnp.asarray(w, jnp.float32) + sign * dw).astype(w.dtype)
    return _rebuild(params, flat)


def merge(params: Mapping[str, Any], adapters: Mapping[str, Any], specs: Mapping[str, LoraSpec],
          phi: jax.Array | None = None) -> dict[str, Any]:
    """Base params with every adapted kernel replaced by ``W + (alpha/r)·A diag(g(phi)) B``.

    Same structure as ``params`` (``{"params": ...}`` kept if given); other leaves are shared, not
    copied. CALA adapters need ``phi`` ``[3]`` (one condition). Pure: jit it with the trees as
    arguments.
    """
    return _merge(params, adapters, specs, phi, 1.0)


def unmerge(merged: Mapping[str, Any], adapters: Mapping[str, Any], specs: Mapping[str, LoraSpec],
            phi: jax.Array | None = None) -> dict[str, Any]:
    """Inverse of ``merge`` (subtracts the same update; exact to one float rounding, see module doc)."""
    return _merge(merged, adapters, specs, phi, -1.0)


def _check(adapters: Mapping[str, Any], specs: Mapping[str, LoraSpec]) -> None:
    extra = sorted(set(adapters) - set(specs))
    lost = sorted(set(specs) - set(adapters))
    if extra or lost:
        raise ValueError(f"adapters and specs disagree: adapters without spec {extra[:10]}, specs without "
                         f"adapter {lost[:10]}")
    for path, ad in adapters.items():
        if "lora_A" not in ad or "lora_B" not in ad:
            raise ValueError(f"adapter {path!r} lacks lora_A/lora_B (has {sorted(ad)})")


# ----------------------------------------------------------------------------- intercepted application


def _broadcast_gate(g: jax.Array, h: jax.Array, path: str) -> jax.Array:
    """g ``[R]`` (one condition) or ``[B, R]`` (per sample) -> broadcastable to h ``[B, ..., R]``."""
    if g.ndim == 1:
        return g
    if g.ndim == 2:
        if h.ndim < 2 or h.shape[0] != g.shape[0]:
            raise ValueError(f"CALA {path}: phi has batch {g.shape[0]} but this layer's input is {h.shape[:-1]} "
                             "(the leading axis must be the sample axis; with classifier-free guidance "
                             "repeat phi for the doubled batch)")
        return g.reshape(g.shape[0], *([1] * (h.ndim - 2)), g.shape[1])
    raise ValueError(f"CALA {path}: phi must be [3] or [B, 3], got gates of shape {g.shape}")


def _lora_out(module: nn.Module, x: jax.Array, y: jax.Array, adapter, spec: LoraSpec, phi) -> jax.Array:
    dt = y.dtype
    a, b = adapter["lora_A"].astype(dt), adapter["lora_B"].astype(dt)
    if spec.kind == "dense":
        if not isinstance(module, nn.Dense):
            raise TypeError(f"LoRA {spec.path}: spec says dense but the module is {type(module).__name__}")
        h = jnp.asarray(x).astype(dt) @ a
    else:
        if not isinstance(module, nn.Conv):
            raise TypeError(f"LoRA {spec.path}: spec says conv but the module is {type(module).__name__}")
        if module.feature_group_count != 1:
            raise ValueError(f"LoRA {spec.path}: grouped convolutions are not supported")
        # The same conv (kernel size, strides, padding, dilation) to r channels, without bias.
        down = module.clone(parent=None, name=None, features=spec.rank, use_bias=False)
        with _suspended():
            h = down.apply({"params": {"kernel": a}}, x)
        b = b[0, 0]
    g = _gate(adapter, phi, spec.gate)
    if g is not None:
        h = h * _broadcast_gate(g, h, spec.path).astype(dt)
    return y + jnp.asarray(spec.scale, dt) * (h @ b)


# Re-entrancy guard, per thread as flax's interceptor stack: the inner conv ``apply`` above is a
# root module (path ()), which a spec for a root-level conv ("kernel") would otherwise re-intercept.
_STATE = threading.local()


@contextlib.contextmanager
def _suspended() -> Iterator[None]:
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


@contextlib.contextmanager
def attach(adapters: Mapping[str, Any], specs: Mapping[str, LoraSpec], phi: jax.Array | None = None, *,
           require_all: bool = False) -> Iterator[set[str]]:
    """Context manager: every ``module.apply`` traced or run inside adds the adapters, unmerged.

    ``phi``: normalised condition(s) for CALA adapters, ``[3]`` (all samples) or ``[B, 3]`` (one
    per sample; B must be the leading axis of every adapted layer's input). Yields the set of
    adapted paths that were actually called; with ``require_all`` exiting raises if some spec was
    never reached (e.g. a typo'd path that still exists as a leaf but is not a Dense/Conv call).
    Use it inside the function you jit (the interception happens at trace time).
    """
    _check(adapters, specs)
    if phi is not None:
        phi = jnp.asarray(phi, jnp.float32)
    hit: set[str] = set()

    def interceptor(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        if getattr(_STATE, "depth", 0) or context.method_name != "__call__":
            return y
        module = context.module
        if module.scope is None:
            return y
        path = SEP.join((*module.path, "kernel"))
        spec = specs.get(path)
        if spec is None:
            return y
        hit.add(path)
        x = args[0] if args else kwargs["inputs"]
        return _lora_out(module, x, y, adapters[path], spec, phi)

    with nn.intercept_methods(interceptor):
        yield hit
    if require_all and set(specs) - hit:
        raise ValueError(f"adapters never reached by the model call: {sorted(set(specs) - hit)[:20]}")


def apply(module: nn.Module, variables: Mapping[str, Any], adapters: Mapping[str, Any],
          specs: Mapping[str, LoraSpec], *args, phi: jax.Array | None = None, require_all: bool = False,
          **kwargs) -> Any:
    """``module.apply(variables, *args, **kwargs)`` with the adapters added beside the frozen
    layers (see ``attach``). ``method=``/``mutable=`` pass through to ``module.apply``.

    Pure in (variables, adapters, phi, args): ``jax.jit(lambda v, a, x, phi: apply(m, v, a, specs,
    x, phi=phi))`` traces once; ``specs`` is static (a closure).
    """
    if not (isinstance(variables, Mapping) and "params" in variables):
        variables = {"params": variables}
    with attach(adapters, specs, phi, require_all=require_all):
        return module.apply(variables, *args, **kwargs)
