"""Building blocks shared by the Stable-Diffusion UNet and VAE (flax.linen, NHWC).

Every module mirrors the diffusers module of the same name, and every Dense/Conv/Norm is a
named submodule called exactly like its diffusers attribute (ModuleList index fused into the
name, e.g. ``name="resnets.0"``, ``name="to_out.0"``). That is what lets
``dekag_jax.weights.convert`` map checkpoints without per-layer tables and lets adapters
(LoRA, CALA) attach by regex over parameter paths such as
``.*/attn[12]/to_(q|k|v|out\\.0)/kernel``.

Layout: activations are ``[B, H, W, C]`` (images/feature maps) or ``[B, L, C]`` (tokens).
``dtype`` is the computation dtype, ``param_dtype`` the storage dtype of parameters.
Normalisation statistics and attention softmax are always computed in float32.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any

# ----------------------------------------------------------------------------- helpers


def silu(x):
    return jax.nn.silu(x)


def group_norm(num_groups: int, eps: float, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.GroupNorm:
    """torch.nn.GroupNorm(num_groups, C, eps, affine=True) on NHWC input (stats in fp32).

    ``use_fast_variance=False``: E[(x-mean)^2] like torch, not E[x^2]-mean^2, which loses
    precision on the large activations of deep UNet blocks.
    """
    return nn.GroupNorm(num_groups=num_groups, epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                        use_fast_variance=False, name=name)


def layer_norm(eps: float, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False, name=name)


def conv(features: int, kernel: int, name: str | None, dtype: Dtype, param_dtype: Dtype, *, stride: int = 1,
         padding: Any = None) -> nn.Conv:
    """torch.nn.Conv2d(..., kernel, stride, padding=(kernel-1)//2) in NHWC."""
    if padding is None:
        p = (kernel - 1) // 2
        padding = ((p, p), (p, p))
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding, dtype=dtype,
                   param_dtype=param_dtype, name=name)


def dense(features: int, name: str, dtype: Dtype, param_dtype: Dtype, *, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name)


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int, *, flip_sin_to_cos: bool = False,
                           downscale_freq_shift: float = 1.0, scale: float = 1.0,
                           max_period: int = 10000) -> jax.Array:
    """Sinusoidal timestep embedding, same as diffusers ``get_timestep_embedding``.

    timesteps: [B] (int or float). Returns [B, embedding_dim] float32.
    """
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D [B], got shape {timesteps.shape}")
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * jnp.arange(half_dim, dtype=jnp.float32)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = scale * emb
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half_dim:], emb[:, :half_dim]], axis=-1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """diffusers ``TimestepEmbedding``: linear_1 -> SiLU -> linear_2. [B, C_in] -> [B, time_embed_dim]."""

    time_embed_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = dense(self.time_embed_dim, "linear_1", self.dtype, self.param_dtype)(x)
        x = silu(x)
        return dense(self.time_embed_dim, "linear_2", self.dtype, self.param_dtype)(x)


# ----------------------------------------------------------------------------- conv blocks


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` (time_embedding_norm="default", pre-norm, SiLU).

    x: [B, H, W, C_in]; temb: [B, T] or None (VAE) -> [B, H, W, out_channels].
    ``conv_shortcut`` (1x1) exists iff C_in != out_channels, as in diffusers.
    """

    out_channels: int
    groups: int = 32
    eps: float = 1e-6
    has_temb: bool = True
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None):
        d, pd = self.dtype, self.param_dtype
        residual = x
        h = group_norm(self.groups, self.eps, "norm1", d, pd)(x)
        h = silu(h)
        h = conv(self.out_channels, 3, "conv1", d, pd)(h)
        if self.has_temb:
            if temb is None:
                raise ValueError("ResnetBlock2D built with a time embedding projection needs temb [B, T]")
            t = dense(self.out_channels, "time_emb_proj", d, pd)(silu(temb))
            h = h + t[:, None, None, :]
        h = group_norm(self.groups, self.eps, "norm2", d, pd)(h)
        h = silu(h)
        # dropout: identity at inference; the diffusion models here are trained with dropout=0.
        h = conv(self.out_channels, 3, "conv2", d, pd)(h)
        if x.shape[-1] != self.out_channels:
            residual = conv(self.out_channels, 1, "conv_shortcut", d, pd)(residual)
        out = residual + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    """diffusers ``Downsample2D`` with use_conv=True: 3x3 conv, stride 2.

    padding=1 (UNet) pads symmetrically; padding=0 (VAE encoder) pads one row/column at the
    bottom/right only, as diffusers does with F.pad(x, (0, 1, 0, 1)).
    """

    out_channels: int
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.padding == 0:
            pad = ((0, 1), (0, 1))
        else:
            pad = ((self.padding, self.padding), (self.padding, self.padding))
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype, stride=2, padding=pad)(x)


def upsample_nearest_2x(x):
    """[B, H, W, C] -> [B, 2H, 2W, C], nearest neighbour (F.interpolate(scale_factor=2))."""
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return x.reshape(b, 2 * h, 2 * w, c)


class Upsample2D(nn.Module):
    """diffusers ``Upsample2D`` with use_conv=True: nearest 2x then 3x3 conv."""

    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = upsample_nearest_2x(x)
        return conv(self.out_channels, 3, "conv", self.dtype, self.param_dtype)(x)


# ----------------------------------------------------------------------------- attention

ATTENTION_IMPLS = ("auto", "chunked", "einsum", "jax")
# "auto" picks per backend when the attention is traced (resolve_attention_impl): the fused
# jax.nn.dot_product_attention on GPU/TPU (SD2.1 UNet, bf16, batch 8 forward on an H200: 33 ms
# against 75 ms chunked, measured by a previous session), the chunked kernel on CPU.
DEFAULT_ATTENTION = "auto"
_AUTO_ATTENTION = {"cpu": "chunked", "gpu": "jax", "cuda": "jax", "rocm": "jax", "tpu": "jax"}
# Query-chunk size is halved until one chunk's logits [B, heads, chunk, Lk] hold at most this many
# elements (16 MB in fp32): keeps the softmax working set near cache size. On the 2-core CPU this
# is ~3x faster than materialising the 4096x4096 logits of SD's 64x64 latents at once.
CHUNK_ELEMENTS = 1 << 22


def _chunk_size(b: int, h: int, lq: int, lk: int, budget: int) -> int:
    cs = lq
    while cs % 2 == 0 and b * h * cs * lk > budget:
        cs //= 2
    return cs


def resolve_attention_impl(impl: str = DEFAULT_ATTENTION, backend: str | None = None) -> str:
    """The implementation ``impl`` stands for: explicit choices as given; ``"auto"`` ->
    ``"chunked"`` on CPU (and unknown backends), ``"jax"`` on GPU/TPU. ``backend`` defaults to
    ``jax.default_backend()`` (where un-placed computations run)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; expected one of {ATTENTION_IMPLS}")
    if impl != "auto":
        return impl
    return _AUTO_ATTENTION.get((backend or jax.default_backend()).lower(), "chunked")


def attention(q, k, v, heads: int, *, upcast: bool = False, impl: str = DEFAULT_ATTENTION,
              chunk_elements: int = CHUNK_ELEMENTS):
    """Multi-head scaled dot-product attention, softmax in float32.

    q: [B, Lq, heads*D], k/v: [B, Lk, heads*D] -> [B, Lq, heads*D] in q.dtype.
    ``upcast`` (diffusers ``upcast_attention``) also forms Q K^T in float32, not just the softmax;
    it matters for fp16/bf16 (SD2.1 overflows without it) and is a no-op in float32.
    ``impl``: "auto" (default: by backend, see :func:`resolve_attention_impl`), "chunked"
    (heads-major layout, queries processed in chunks under ``lax.map``, normalisation applied
    after the P V product), "einsum" (one einsum pair over the full [Lq, Lk] logits), or "jax"
    (jax.nn.dot_product_attention; on accelerators it can pick fused kernels). All agree to float
    tolerance (tests/test_unet_parity.py, tests/test_attention_backend.py).
    """
    b, lq, inner = q.shape
    lk = k.shape[1]
    if inner % heads:
        raise ValueError(f"attention width {inner} is not divisible by {heads} heads")
    impl = resolve_attention_impl(impl)
    dh = inner // heads
    out_dtype = q.dtype
    scale = 1.0 / math.sqrt(dh)
    if upcast:
        q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    if impl == "jax" and (out_dtype == jnp.float32 or not upcast):
        q4, k4, v4 = (a.reshape(b, a.shape[1], heads, dh) for a in (q, k, v))
        o = jax.nn.dot_product_attention(q4, k4.astype(q4.dtype), v4.astype(q4.dtype), scale=scale)
        return o.astype(out_dtype).reshape(b, lq, inner)
    if impl in ("einsum", "jax"):  # "jax" with mixed precision + upcast: fp32 logits here
        q4, k4, v4 = (a.reshape(b, a.shape[1], heads, dh) for a in (q, k, v))
        # Scale q before the product (cheaper than scaling the [Lq, Lk] logits).
        logits = jnp.einsum("bqhd,bkhd->bhqk", q4 * jnp.asarray(scale, q4.dtype), k4,
                            preferred_element_type=jnp.float32)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        o = jnp.einsum("bhqk,bkhd->bqhd", probs, v4)
        return o.astype(out_dtype).reshape(b, lq, inner)

    # chunked: [B, H, L, D] layout so each head's products are plain contiguous matmuls.
    kh = k.reshape(b, lk, heads, dh).transpose(0, 2, 1, 3)
    vh = v.reshape(b, lk, heads, dh).transpose(0, 2, 1, 3)
    cs = _chunk_size(b, heads, lq, lk, chunk_elements)
    n = lq // cs
    qh = (q * jnp.asarray(scale, q.dtype)).reshape(b, n, cs, heads, dh).transpose(1, 0, 3, 2, 4)

    o = _chunked_attention(qh, kh, vh)  # [n, B, H, cs, D]
    return o.astype(out_dtype).transpose(1, 0, 3, 2, 4).reshape(b, lq, inner)


def _chunk_fwd(qc, kh, vh):
    """One query chunk. qc [B, H, cs, D] (pre-scaled), kh/vh [B, H, Lk, D] ->
    (out [B, H, cs, D] in qc.dtype, logsumexp [B, H, cs] float32)."""
    s = jnp.einsum("bhqd,bhkd->bhqk", qc, kh, preferred_element_type=jnp.float32)
    m = jnp.max(s, axis=-1, keepdims=True)
    e = jnp.exp(s - m)
    l = jnp.sum(e, axis=-1, keepdims=True)
    o = jnp.einsum("bhqk,bhkd->bhqd", e.astype(vh.dtype), vh, preferred_element_type=jnp.float32) / l
    return o.astype(qc.dtype), (m + jnp.log(l))[..., 0]


@jax.custom_vjp
def _chunked_attention(qh, kh, vh):
    """softmax(q k^T) v over query chunks. qh [n, B, H, cs, D] (pre-scaled), kh/vh [B, H, Lk, D].

    Custom VJP in the FlashAttention style: the forward saves only the output and the per-row
    logsumexp, the backward recomputes each chunk's probabilities. This keeps memory at O(L*D)
    per layer instead of O(L^2) and is faster on CPU than differentiating the forward.
    """
    return _chunked_attention_fwd(qh, kh, vh)[0]


def _chunked_attention_fwd(qh, kh, vh):
    if qh.shape[0] == 1:
        o, lse = _chunk_fwd(qh[0], kh, vh)
        o, lse = o[None], lse[None]
    else:
        o, lse = jax.lax.map(lambda qc: _chunk_fwd(qc, kh, vh), qh)
    return o, (qh, kh, vh, o, lse)


def _chunked_attention_bwd(res, do):
    qh, kh, vh, o, lse = res

    def chunk(carry, xs):
        dk, dv = carry
        qc, oc, doc, lc = xs
        s = jnp.einsum("bhqd,bhkd->bhqk", qc, kh, preferred_element_type=jnp.float32)
        p = jnp.exp(s - lc[..., None])
        dv = dv + jnp.einsum("bhqk,bhqd->bhkd", p.astype(doc.dtype), doc, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bhqd,bhkd->bhqk", doc, vh, preferred_element_type=jnp.float32)
        delta = jnp.sum(doc.astype(jnp.float32) * oc.astype(jnp.float32), axis=-1, keepdims=True)
        ds = p * (dp - delta)
        dq = jnp.einsum("bhqk,bhkd->bhqd", ds.astype(kh.dtype), kh, preferred_element_type=jnp.float32)
        dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds.astype(qc.dtype), qc, preferred_element_type=jnp.float32)
        return (dk, dv), dq.astype(qc.dtype)

    zeros = jnp.zeros(kh.shape, jnp.float32)
    (dk, dv), dq = jax.lax.scan(chunk, (zeros, zeros), (qh, o, do, lse))
    return dq, dk.astype(kh.dtype), dv.astype(vh.dtype)


_chunked_attention.defvjp(_chunked_attention_fwd, _chunked_attention_bwd)


class Attention(nn.Module):
    """diffusers ``Attention`` as used in transformer blocks (to_q/to_k/to_v without bias,
    ``to_out.0`` with bias).

    x: [B, Lq, query_dim]; context: [B, Lk, cross_dim] or None (self-attention) -> [B, Lq, query_dim].
    """

    heads: int
    dim_head: int
    upcast_attention: bool = False
    bias: bool = False
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None):
        d, pd = self.dtype, self.param_dtype
        inner = self.heads * self.dim_head
        context = x if context is None else context
        q = dense(inner, "to_q", d, pd, use_bias=self.bias)(x)
        k = dense(inner, "to_k", d, pd, use_bias=self.bias)(context)
        v = dense(inner, "to_v", d, pd, use_bias=self.bias)(context)
        upcast = self.upcast_attention or jnp.dtype(d) != jnp.float32
        o = attention(q, k, v, self.heads, upcast=upcast, impl=self.attention_impl)
        return dense(x.shape[-1], "to_out.0", d, pd)(o)


class GEGLU(nn.Module):
    """diffusers ``GEGLU``: proj to 2*inner, hidden * gelu(gate) with the exact (erf) GELU."""

    inner_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h = dense(2 * self.inner_dim, "proj", self.dtype, self.param_dtype)(x)
        hidden, gate = jnp.split(h, 2, axis=-1)
        return hidden * jax.nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """diffusers ``FeedForward`` with activation_fn="geglu": ``net.0`` (GEGLU) -> ``net.2`` (Linear)."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        h = GEGLU(inner_dim=dim * self.mult, dtype=self.dtype, param_dtype=self.param_dtype, name="net.0")(x)
        return dense(dim, "net.2", self.dtype, self.param_dtype)(h)


class BasicTransformerBlock(nn.Module):
    """diffusers ``BasicTransformerBlock`` (norm_type="layer_norm", geglu FF, no ada-norm).

    x: [B, L, dim]; context: [B, Lc, cross_dim] -> [B, L, dim].
    """

    heads: int
    dim_head: int
    upcast_attention: bool = False
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        d, pd = self.dtype, self.param_dtype
        kw = dict(heads=self.heads, dim_head=self.dim_head, upcast_attention=self.upcast_attention,
                  attention_impl=self.attention_impl, dtype=d, param_dtype=pd)
        x = Attention(**kw, name="attn1")(layer_norm(1e-5, "norm1", d, pd)(x)) + x
        x = Attention(**kw, name="attn2")(layer_norm(1e-5, "norm2", d, pd)(x), context) + x
        x = FeedForward(dtype=d, param_dtype=pd, name="ff")(layer_norm(1e-5, "norm3", d, pd)(x)) + x
        return x


class Transformer2DModel(nn.Module):
    """diffusers ``Transformer2DModel`` for continuous (latent-image) input.

    x: [B, H, W, C]; context: [B, L, cross_dim] -> [B, H, W, C].
    ``use_linear_projection`` picks Dense (SD2.x) or 1x1 Conv (SD1.x) for proj_in/proj_out.
    The GroupNorm eps is 1e-6 regardless of the UNet's norm_eps (as in diffusers).
    """

    heads: int
    dim_head: int
    num_layers: int = 1
    norm_num_groups: int = 32
    use_linear_projection: bool = False
    upcast_attention: bool = False
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        d, pd = self.dtype, self.param_dtype
        b, hh, ww, c = x.shape
        inner = self.heads * self.dim_head
        residual = x
        h = group_norm(self.norm_num_groups, 1e-6, "norm", d, pd)(x)
        if self.use_linear_projection:
            h = dense(inner, "proj_in", d, pd)(h.reshape(b, hh * ww, c))
        else:
            h = conv(inner, 1, "proj_in", d, pd)(h).reshape(b, hh * ww, inner)
        for i in range(self.num_layers):
            h = BasicTransformerBlock(heads=self.heads, dim_head=self.dim_head, upcast_attention=self.upcast_attention,
                                      attention_impl=self.attention_impl, dtype=d, param_dtype=pd,
                                      name=f"transformer_blocks.{i}")(h, context)
        if self.use_linear_projection:
            h = dense(c, "proj_out", d, pd)(h).reshape(b, hh, ww, c)
        else:
            h = conv(c, 1, "proj_out", d, pd)(h.reshape(b, hh, ww, inner))
        return h + residual


class VAEAttention(nn.Module):
    """diffusers ``Attention`` as built for VAE mid blocks (``_from_deprecated_attn_block``):
    group_norm -> to_q/to_k/to_v (with bias) -> softmax attention over H*W -> ``to_out.0``,
    plus the residual. Heads = C // attention_head_dim (1 for SD's VAE).

    x: [B, H, W, C] -> [B, H, W, C].
    """

    attention_head_dim: int
    norm_num_groups: int = 32
    eps: float = 1e-6
    attention_impl: str = DEFAULT_ATTENTION
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        d, pd = self.dtype, self.param_dtype
        b, hh, ww, c = x.shape
        heads = c // self.attention_head_dim
        h = group_norm(self.norm_num_groups, self.eps, "group_norm", d, pd)(x).reshape(b, hh * ww, c)
        q = dense(c, "to_q", d, pd)(h)
        k = dense(c, "to_k", d, pd)(h)
        v = dense(c, "to_v", d, pd)(h)
        o = attention(q, k, v, heads, upcast=True, impl=self.attention_impl)
        o = dense(c, "to_out.0", d, pd)(o)
        return o.reshape(b, hh, ww, c) + x
