"""Training partition: only adapter, gate and metaword parameters get gradients and optimiser
state; the frozen model is a function argument, never a jit constant.

Two ways, the same rules:

* ``make_step`` (recommended): the trainable tree (e.g. ``{"lora": adapters, "metaword": mu}``) and
  the frozen tree are separate arguments of one jitted step; gradients are taken with respect to
  the trainable tree only, so the frozen model costs neither gradient memory nor optimiser
  state, and because it is an argument (not closed over) XLA never embeds its weights in the
  program (closing over a 3.5 GB UNet would bake it into the executable and the compile cache).
* ``optimizer`` (one tree holding everything): ``optax.multi_transform`` whose labels come from
  regex rules over the tree's paths (``rules.label_tree``, full match, first rule wins, as
  big_vision's ``optax.py``); leaves labelled ``"frozen"`` get ``optax.set_to_zero()``, which
  keeps no state. Optax masks the other transforms' state to the leaves they own.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import optax

from dekag_jax.adapt.rules import label_tree

__all__ = ["FROZEN", "optimizer", "make_step", "tree_size"]

FROZEN = "frozen"


def optimizer(transforms: Mapping[str, optax.GradientTransformation] | optax.GradientTransformation,
              rules: Sequence[tuple[str, str]], *, default: str | None = FROZEN) -> optax.GradientTransformation:
    """``optax.multi_transform`` over a whole tree, labelled by ``(pattern, label)`` rules.

    transforms: ``{label: transform}``, or one transform for the label ``"train"``. The label
    ``"frozen"`` always maps to ``optax.set_to_zero()`` (no state, zero update). Leaves no rule
    matches get ``default`` (frozen unless told otherwise; ``None`` makes them an error). A rule
    naming a label without a transform is an error.
    """
    if isinstance(transforms, optax.GradientTransformation):
        transforms = {"train": transforms}
    transforms = dict(transforms)
    if FROZEN in transforms:
        raise ValueError(f"the label {FROZEN!r} is reserved for optax.set_to_zero()")
    transforms[FROZEN] = optax.set_to_zero()
    unknown = sorted({label for _, label in rules} - set(transforms))
    if unknown:
        raise ValueError(f"rules use labels without a transform: {unknown} (have {sorted(transforms)})")
    return optax.multi_transform(transforms, lambda tree: label_tree(tree, rules, default))


def make_step(loss_fn: Callable[..., Any], tx: optax.GradientTransformation, *, has_aux: bool = False,
              donate: bool = True, in_shardings: Any = None, out_shardings: Any = None) -> Callable[..., Any]:
    """A jitted ``step(trainable, opt_state, frozen, *batch) -> (trainable, opt_state, loss[, aux])``.

    ``loss_fn(trainable, frozen, *batch)`` returns the scalar loss (or ``(loss, aux)`` with
    ``has_aux``). Gradients w.r.t. ``trainable`` only; ``frozen`` is an argument (not donated,
    reused every step). ``trainable`` and ``opt_state`` are donated: their buffers are reused for
    the new ones. Initialise ``opt_state = tx.init(trainable)``. ``in_shardings`` / ``out_shardings``
    (pytree prefixes of the arguments / outputs, e.g. data-parallel over a mesh) go to ``jax.jit``
    when given; left out, jit follows the arguments' placement.
    """
    def step(trainable, opt_state, frozen, *batch):
        out, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(trainable, frozen, *batch)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        if has_aux:
            loss, aux = out
            return trainable, opt_state, loss, aux
        return trainable, opt_state, out

    kw = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings)) if v is not None}
    return jax.jit(step, donate_argnums=(0, 1) if donate else (), **kw)


def tree_size(tree: Any) -> int:
    """Number of scalars in a tree's array leaves (optax's MaskedNode/empty states count 0)."""
    return sum(int(getattr(x, "size", 0)) for x in jax.tree_util.tree_leaves(tree))
