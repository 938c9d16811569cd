"""Performance accounting: FLOPs counted from a function's jaxpr, a measured matmul peak, MFU.

Why here (top level, beside ``parallel.py`` and ``runtime.py``): the counter knows nothing of any
model; it reads shapes off a jaxpr, so the UNet, the VAE, the JSCC codec and the channel chain
are all counted by the same code. It is not a model (``models/`` must not hold tooling that
scripts and other layers import) and not a metric (``metrics/`` scores images). It imports only
JAX and NumPy, so any layer or script may use it without breaking the layering rules.

What is counted, and how (all from shapes, never from timing or from XLA):

* ``dot_general``: 2·(batch)·M·N·K real FLOPs, K the product of the contracting dimensions
  (complex operands: ×4, a complex multiply-add is 4 real multiplies and 4 adds).
* ``conv_general_dilated``: 2 FLOPs per multiply-add actually performed: output elements ×
  (input features per group) × the number of kernel taps that land on real input. Taps on the
  zero padding and on the holes that ``lhs_dilation`` inserts (autodiff writes the input
  gradient of a strided conv that way) are not counted: they are not arithmetic the model
  needs, cuDNN's data-gradient kernels do not perform them, and XLA's own cost analysis counts
  the same way (checked in ``tests/test_flops.py``). For a VALID conv this is exactly
  2·kh·kw·cin·cout·H_out·W_out·B / groups.
* fused attention (cuDNN's ``dot_product_attention_fwd``/``_bwd`` primitives that
  ``jax.nn.dot_product_attention(implementation="cudnn")`` emits on GPUs): the matmuls the
  kernel performs, 4·B·N·T·S·D forward (Q Kᵀ and P V), B·N·T·S·(6·D_qk + 4·D_v) backward (Q Kᵀ
  recomputed, dV, dP, dQ, dK). Masks are ignored (an upper bound for causal masks). On CPU,
  ``jax.nn.dot_product_attention`` traces to two ``dot_general``s and is counted as above.
* elementwise arithmetic and reductions: one FLOP per output element (per input element for
  reductions), transcendentals (exp, log, tanh, erf, rsqrt, ...) separately, as XLA reports
  them. Reported apart from the matmul/conv "model FLOPs" used for MFU.

Sub-jaxprs are walked recursively: ``jit``/``pjit``, ``remat``/``checkpoint`` (recomputation is
counted: it is executed), ``custom_jvp``/``custom_vjp`` (their primal jaxpr; under ``grad`` the
backward rules are already traced into the outer jaxpr), ``scan`` (× length; ``lax.map`` and
static ``fori_loop`` lower to it), ``cond`` (the most expensive branch), ``shard_map`` (× the
number of shards), ``while`` (body counted once: its trip count is unknown at trace time; the
number of such loops is reported in ``FlopCount.unbounded_loops`` so a caller can tell).

Dead code is counted: XLA drops work whose result nobody uses (e.g. the forward conv under
``grad`` of a loss linear in its output), the jaxpr still holds it.

Model FLOPs vs executed FLOPs: the count is of the program traced. A program with remat or a
FlashAttention-style backward (``attention_impl="chunked"``) executes more than the model
needs; count a reference configuration (plain einsum attention, no remat) for MFU's numerator
and the real one for hardware utilisation.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Optional

import numpy as np

__all__ = ["FlopCount", "count_flops", "count_jaxpr", "conv_flops", "matmul_flops",
           "xla_cost_flops", "measure_matmul_peak", "measure_copy_bandwidth", "mfu"]

# One FLOP per output element, as XLA's HloCostAnalysis counts elementwise arithmetic.
_ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "rem", "neg", "max", "min", "abs", "sign", "square", "integer_pow",
    "floor", "ceil", "round", "clamp", "nextafter", "add_any", "select_n", "ne", "eq", "lt", "le",
    "gt", "ge", "and", "or", "not", "xor", "reciprocal",
})
# XLA reports these as "transcendentals", apart from "flops".
_TRANSCENDENTAL = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "atan2",
    "sqrt", "rsqrt", "cbrt", "pow", "erf", "erfc", "erf_inv", "lgamma", "digamma", "asin", "acos",
    "atan", "sinh", "cosh", "asinh", "acosh", "atanh",
})
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax",
                         "argmin", "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"})


@dataclasses.dataclass
class FlopCount:
    """FLOPs of one call of a traced function (real-FLOP equivalents).

    ``matmul``: all ``dot_general``s, of which ``matmul_batched`` are those with batch dimensions
    (in our models exactly attention's Q Kᵀ and P V and their gradients; projections, GEGLU and
    linear proj_in/out are plain contractions); ``conv``: convolutions; ``attention_fused``:
    fused attention kernels; ``model`` = matmul + conv + attention_fused, the MFU numerator.
    ``elementwise``, ``transcendentals``: as XLA reports them. ``by_primitive``: FLOPs per
    primitive name; ``transcendental_elements``: transcendental evaluations per primitive name
    (XLA:CPU expands some into arithmetic, e.g. ``logistic`` into 3 FLOPs and ``erfc`` into
    about 60, which its "flops" then include). ``unbounded_loops``: ``while`` loops whose body was counted once.
    ``opaque``: primitives whose cost is unknown here (e.g. ``pallas_call``), by name.
    """
    matmul: float = 0.0
    matmul_batched: float = 0.0
    conv: float = 0.0
    attention_fused: float = 0.0
    elementwise: float = 0.0
    transcendentals: float = 0.0
    by_primitive: Dict[str, float] = dataclasses.field(default_factory=dict)
    transcendental_elements: Dict[str, float] = dataclasses.field(default_factory=dict)
    unbounded_loops: int = 0
    opaque: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def model(self) -> float:
        return self.matmul + self.conv + self.attention_fused

    @property
    def xla_like(self) -> float:
        """What XLA's cost analysis calls "flops": model FLOPs plus elementwise and reductions."""
        return self.model + self.elementwise

    def summary(self, unit: float = 1e9, name: str = "GFLOP") -> str:
        s = (f"model {self.model / unit:.3f} {name} (matmul {self.matmul / unit:.3f}, of which batched "
             f"{self.matmul_batched / unit:.3f}; conv {self.conv / unit:.3f}; fused attention "
             f"{self.attention_fused / unit:.3f}); elementwise {self.elementwise / unit:.3f}, "
             f"transcendentals {self.transcendentals / unit:.3f}")
        if self.unbounded_loops:
            s += f"; {self.unbounded_loops} while loop(s) counted once"
        if self.opaque:
            s += f"; not counted: {dict(self.opaque)}"
        return s


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _is_complex(dtype) -> bool:
    return np.issubdtype(np.dtype(dtype), np.complexfloating)


def matmul_flops(lhs_shape, rhs_shape, dimension_numbers, complex_: bool = False) -> float:
    """FLOPs of ``lax.dot_general``: 2 · batch · M · N · K (×4 for complex operands).

    Shapes are tuples; ``dimension_numbers`` = ((lhs_contract, rhs_contract), (lhs_batch,
    rhs_batch)) as ``lax.dot_general`` takes them.
    """
    (lc, rc), (lb, rb) = dimension_numbers
    k = _size([lhs_shape[d] for d in lc])
    batch = _size([lhs_shape[d] for d in lb])
    m = _size([s for d, s in enumerate(lhs_shape) if d not in lc and d not in lb])
    n = _size([s for d, s in enumerate(rhs_shape) if d not in rc and d not in rb])
    return 2.0 * batch * m * n * k * (4 if complex_ else 1)


def _taps_1d(out_len, in_len, k_len, stride, pad_lo, lhs_dil, rhs_dil) -> int:
    """Number of (output position, kernel tap) pairs along one spatial dimension that read a
    real input element (not padding, not an lhs-dilation hole)."""
    o = np.arange(out_len)[:, None]
    k = np.arange(k_len)[None, :]
    p = o * stride + k * rhs_dil - pad_lo      # position in the dilated, padded input
    real = (p >= 0) & (p % lhs_dil == 0) & (p // lhs_dil < in_len)
    return int(real.sum())


def conv_flops(lhs_shape, rhs_shape, out_shape, *, window_strides, padding, lhs_dilation,
               rhs_dilation, dimension_numbers, complex_: bool = False) -> float:
    """FLOPs of ``lax.conv_general_dilated`` as its jaxpr equation states it (see module doc).

    ``dimension_numbers`` is a ``lax.ConvDimensionNumbers`` (lhs_spec, rhs_spec, out_spec: dim
    indices ordered batch/feature then spatial). Each output element sums over the rhs input-
    feature dimension (already cin / feature_group_count) and the kernel taps on real input.
    """
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    n_sp = len(lhs_spec) - 2
    batch_and_feat = out_shape[out_spec[0]] * out_shape[out_spec[1]]
    cin_per_group = rhs_shape[rhs_spec[1]]
    taps = 1
    for i in range(n_sp):
        taps *= _taps_1d(out_shape[out_spec[2 + i]], lhs_shape[lhs_spec[2 + i]], rhs_shape[rhs_spec[2 + i]],
                         window_strides[i], padding[i][0], lhs_dilation[i], rhs_dilation[i])
    # ``taps`` already sums over output spatial positions.
    return 2.0 * batch_and_feat * cin_per_group * taps * (4 if complex_ else 1)


def _fused_attention_flops(name: str, invars, params) -> float:
    q, k, v = (x.aval.shape for x in invars[:3])
    layout = params.get("layout", 0)
    layout = getattr(layout, "value", layout)
    if layout == 1:   # BNTH
        b, n, t, dqk = q
        s, dv = k[2], v[3]
    else:             # BTNH (cuDNN's default)
        b, t, n, dqk = q
        s, dv = k[1], v[3]
    if "bwd" in name:
        return float(b * n * t * s * (6 * dqk + 4 * dv))
    return float(2 * b * n * t * s * (dqk + dv))


def _sub_jaxprs(params):
    """(param name, jaxpr) for every sub-jaxpr among an equation's params."""
    from jax.extend import core as jcore

    for key, val in params.items():
        vals = val if isinstance(val, (tuple, list)) else (val,)
        for x in vals:
            if isinstance(x, jcore.ClosedJaxpr):
                yield key, x.jaxpr
            elif isinstance(x, jcore.Jaxpr):
                yield key, x


def _accumulate(jaxpr, mult: float, acc: FlopCount) -> None:
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        params = eqn.params
        if name == "dot_general":
            lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
            f = mult * matmul_flops(lhs.shape, rhs.shape, params["dimension_numbers"],
                                    _is_complex(lhs.dtype) or _is_complex(rhs.dtype))
            acc.matmul += f
            if params["dimension_numbers"][1][0]:
                acc.matmul_batched += f
        elif name == "conv_general_dilated":
            lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
            f = mult * conv_flops(lhs.shape, rhs.shape, eqn.outvars[0].aval.shape,
                                  window_strides=params["window_strides"], padding=params["padding"],
                                  lhs_dilation=params["lhs_dilation"], rhs_dilation=params["rhs_dilation"],
                                  dimension_numbers=params["dimension_numbers"],
                                  complex_=_is_complex(lhs.dtype))
            acc.conv += f
        elif name.startswith("dot_product_attention") and ("fwd" in name or "bwd" in name):
            f = mult * _fused_attention_flops(name, eqn.invars, params)
            acc.attention_fused += f
        elif name in _ELEMENTWISE:
            f = mult * sum(_size(v.aval.shape) for v in eqn.outvars)
            acc.elementwise += f
        elif name in _REDUCTIONS:
            f = mult * _size(eqn.invars[0].aval.shape)
            acc.elementwise += f
        elif name in _TRANSCENDENTAL:
            e = mult * sum(_size(v.aval.shape) for v in eqn.outvars)
            acc.transcendentals += e
            acc.transcendental_elements[name] = acc.transcendental_elements.get(name, 0.0) + e
            f = 0.0
        else:
            f = 0.0
            subs = list(_sub_jaxprs(params))
            if name == "scan":
                for _, sub in subs:
                    _accumulate(sub, mult * params["length"], acc)
            elif name == "cond":
                # Only one branch runs: count the most expensive one.
                best = None
                for _, sub in subs:
                    trial = FlopCount()
                    _accumulate(sub, mult, trial)
                    if best is None or trial.model + trial.elementwise > best.model + best.elementwise:
                        best = trial
                if best is not None:
                    _merge(acc, best)
            elif name == "while":
                acc.unbounded_loops += 1
                for _, sub in subs:
                    _accumulate(sub, mult, acc)
            elif name == "shard_map":
                shards = _shard_count(params)
                for _, sub in subs:
                    _accumulate(sub, mult * shards, acc)
            elif subs:
                for _, sub in subs:
                    _accumulate(sub, mult, acc)
            elif name in ("pallas_call", "custom_call", "ffi_call") or name.startswith("dot_product_attention"):
                acc.opaque[name] = acc.opaque.get(name, 0) + 1
        if f:
            acc.by_primitive[name] = acc.by_primitive.get(name, 0.0) + f


def _shard_count(params) -> int:
    mesh = params.get("mesh")
    if mesh is None:
        return 1
    axes = params.get("manual_axes") or getattr(mesh, "axis_names", ())
    shape = dict(getattr(mesh, "shape", {}))
    return int(np.prod([shape.get(a, 1) for a in axes])) if shape else 1


def _merge(acc: FlopCount, other: FlopCount) -> None:
    for f in ("matmul", "matmul_batched", "conv", "attention_fused", "elementwise", "transcendentals"):
        setattr(acc, f, getattr(acc, f) + getattr(other, f))
    acc.unbounded_loops += other.unbounded_loops
    for k, v in other.by_primitive.items():
        acc.by_primitive[k] = acc.by_primitive.get(k, 0.0) + v
    for k, v in other.transcendental_elements.items():
        acc.transcendental_elements[k] = acc.transcendental_elements.get(k, 0.0) + v
    for k, v in other.opaque.items():
        acc.opaque[k] = acc.opaque.get(k, 0) + v


def count_jaxpr(jaxpr) -> FlopCount:
    """Count a ``ClosedJaxpr`` or ``Jaxpr`` (see module doc for what is counted)."""
    acc = FlopCount()
    _accumulate(getattr(jaxpr, "jaxpr", jaxpr), 1.0, acc)
    return acc


def count_flops(fn: Callable, *args, **kwargs) -> FlopCount:
    """FLOPs of one call ``fn(*args, **kwargs)``, traced abstractly with ``jax.make_jaxpr``.

    ``args`` may be arrays or ``jax.ShapeDtypeStruct``s (nothing is computed or allocated, so
    SD2.1-sized models count in seconds on any machine). Works for forward functions and for
    ``jax.grad``/``value_and_grad`` of them alike.
    """
    import jax

    return count_jaxpr(jax.make_jaxpr(fn)(*args, **kwargs))


def xla_cost_flops(compiled_or_lowered) -> Optional[float]:
    """XLA's own ``cost_analysis()['flops']`` of a ``jax.stages.Compiled`` (None if absent).

    On GPU this undercounts: convolutions and fused attention become library calls whose cost
    XLA does not see. Use it as a cross-check on CPU only.
    """
    cost = compiled_or_lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


def measure_matmul_peak(n: int = 4096, dtype=None, device=None, iters: int = 10,
                        warmup: int = 2) -> Dict[str, Any]:
    """Achieved FLOP/s of an n×n×n matmul on ``device`` (default: JAX's first device).

    The practical peak MFU is measured against: what the same library reaches on a large,
    well-shaped product on the same card in the same run. ``dtype`` defaults to bfloat16 on
    accelerators and float32 on CPU. Inputs are random normal (zeros run faster on some GPUs);
    ``iters`` calls are timed one by one after ``warmup`` calls. The peak is the fastest call
    (a ceiling: on a shared machine the median drifts with other jobs' load; the median is
    returned too). Returns dict(flops_per_s, seconds, median_flops_per_s, median_seconds, n,
    dtype, device).
    """
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    if dtype is None:
        dtype = jnp.float32 if device.platform == "cpu" else jnp.bfloat16
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put(jax.random.normal(kb, (n, n), jnp.float32).astype(dtype), device)
    f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=dtype))
    for _ in range(warmup):
        f(a, b).block_until_ready()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        ts.append(time.perf_counter() - t0)
    best, med = float(np.min(ts)), float(np.median(ts))
    return dict(flops_per_s=2.0 * n ** 3 / best, seconds=best, median_flops_per_s=2.0 * n ** 3 / med,
                median_seconds=med, n=n, dtype=str(jnp.dtype(dtype)),
                device=getattr(device, "device_kind", str(device)))


def measure_copy_bandwidth(nbytes: int = 1 << 30, device=None, iters: int = 10,
                           warmup: int = 2) -> Dict[str, Any]:
    """Achieved device-memory bandwidth of a streaming pass, bytes read + bytes written per second.

    The memory ceiling a bandwidth-bound kernel (the channel chain) is measured against: a jitted
    ``x + 1`` over ``nbytes`` of float32 reads and writes every byte once (a bare copy could be
    elided by XLA, returning its input). Random input, median of ``iters`` timed calls after
    ``warmup``. Returns dict(bytes_per_s, seconds, nbytes, device).
    """
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    n = max(1, nbytes // 4)
    x = jax.device_put(jax.random.normal(jax.random.key(1), (n,), jnp.float32), device)
    f = jax.jit(lambda v: v + 1.0)
    for _ in range(warmup):
        f(x).block_until_ready()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        ts.append(time.perf_counter() - t0)
    sec = float(np.median(ts))
    return dict(bytes_per_s=2.0 * 4 * n / sec, seconds=sec, nbytes=4 * n,
                device=getattr(device, "device_kind", str(device)))


def mfu(model_flops: float, seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the measured peak."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError(f"mfu needs positive seconds and peak, got {seconds} and {peak_flops_per_s}")
    return model_flops / seconds / peak_flops_per_s
