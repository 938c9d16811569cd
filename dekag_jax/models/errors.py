"""Errors shared by the model definitions."""
from __future__ import annotations


class UnsupportedConfigError(ValueError):
    """A Hugging Face config asks for a feature this implementation does not have.

    The message names the config field and its value, so a user knows what to change
    (or what to implement) instead of getting silently different math.
    """
