"""Regex rules over parameter paths: the one mechanism that picks adapter targets, frozen vs
trainable parameters and (later) sharding.

A *path* is the "/"-joined key path of a leaf inside a model's ``params`` collection, exactly as
``dekag_jax.weights.convert.flatten`` writes it, e.g.
``down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/kernel``. Because our parameter
paths are the diffusers/transformers module names, a rule is the regex a user already knows.

Matching reading (as big_vision's ``u.tree_map_with_regex`` / ``optax.py``): a pattern must
match the **whole** path (``re.fullmatch``), so ``to_q/kernel`` does not silently also match
``to_q/kernel_ema`` and a pattern says exactly what it selects; write ``.*`` where you mean
"anywhere". The **first** rule whose pattern matches a path wins.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax

from dekag_jax.weights.convert import SEP, flatten

__all__ = ["Rule", "params_dict", "tree_paths", "first_match", "match_paths", "label_tree"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """``(pattern, rank, alpha)``: LoRA of rank ``rank`` and scale ``alpha / rank`` on every kernel
    whose path fully matches ``pattern``. ``alpha`` defaults to ``rank`` (scale 1), as diffusers
    assumes when a file carries no alpha."""

    pattern: str
    rank: int
    alpha: float | None = None

    def __post_init__(self):
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"rule {self.pattern!r}: not a valid regex ({e})") from None
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(f"rule {self.pattern!r}: rank must be a positive int, got {self.rank!r}")
        if self.alpha is not None and not float(self.alpha) > 0:
            raise ValueError(f"rule {self.pattern!r}: alpha must be > 0, got {self.alpha!r}")

    @property
    def scale(self) -> float:
        return (float(self.alpha) if self.alpha is not None else float(self.rank)) / self.rank


def as_rule(r: Any) -> Rule:
    """A ``Rule`` from a Rule or a tuple ``(pattern, rank[, alpha])``."""
    if isinstance(r, Rule):
        return r
    if isinstance(r, (tuple, list)) and 2 <= len(r) <= 3 and isinstance(r[0], str):
        return Rule(*r)
    raise TypeError(f"a rule is Rule or (pattern, rank[, alpha]), got {r!r}")


def params_dict(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``params`` collection: accepts ``{"params": {...}}`` (flax variables) or the inner dict."""
    if not isinstance(tree, Mapping):
        raise TypeError(f"params must be a (nested) dict, got {type(tree).__name__}")
    if set(tree.keys()) == {"params"} and isinstance(tree["params"], Mapping):
        return tree["params"]
    return tree


def tree_paths(tree: Mapping[str, Any]) -> dict[str, Any]:
    """``{path: leaf}`` of a params tree (``{"params": ...}`` or the inner dict)."""
    return flatten(params_dict(tree))


def first_match(path: str, patterns: Sequence[str]) -> int | None:
    """Index of the first pattern that fully matches ``path``, or None."""
    for i, p in enumerate(patterns):
        if re.fullmatch(p, path):
            return i
    return None


def match_paths(paths: Iterable[str], patterns: Sequence[str], *, what: str = "rules",
                require_all: bool = True) -> dict[str, int]:
    """``{path: index of the first matching pattern}`` for the paths some pattern matches.

    With ``require_all`` a pattern that matches no path at all (typo, wrong model, or every path
    it matches already taken by an earlier rule) raises one ValueError naming every such pattern.
    """
    paths = list(paths)
    out: dict[str, int] = {}
    for path in paths:
        i = first_match(path, patterns)
        if i is not None:
            out[path] = i
    if require_all:
        used = set(out.values())
        dead = [patterns[i] for i in range(len(patterns)) if i not in used]
        if dead:
            raise ValueError(f"{what}: {len(dead)} pattern(s) match no path (of {len(paths)}; a pattern must "
                             f"match the whole path, and the first matching rule wins): {dead}")
    return out


def label_tree(tree: Any, rules: Sequence[tuple[str, str]], default: str | None = None) -> Any:
    """The same tree with each leaf replaced by the label of the first ``(pattern, label)`` whose
    pattern fully matches the leaf's path (keys joined with "/"; a ``{"params": ...}`` wrapper is
    NOT stripped here, so write patterns for the tree you pass). Leaves no rule matches get
    ``default``; with ``default=None`` they raise one ValueError listing them.

    This is what ``optax.multi_transform`` takes as ``param_labels`` (see ``adapt.partition``).
    """
    patterns = [p for p, _ in rules]
    missing: list[str] = []

    def label(kp, _leaf):
        path = SEP.join(_key_str(k) for k in kp)
        i = first_match(path, patterns)
        if i is None:
            if default is None:
                missing.append(path)
                return None
            return default
        return rules[i][1]

    out = jax.tree_util.tree_map_with_path(label, tree)
    if missing:
        raise ValueError(f"{len(missing)} leaves match no label rule and no default is given: {missing[:20]}")
    return out


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def path_fn(rules: Sequence[tuple[str, str]], default: str | None = None) -> Callable[[Any], Any]:
    """``lambda tree: label_tree(tree, rules, default)``: what optax wants as a labels callable."""
    return lambda tree: label_tree(tree, rules, default)
