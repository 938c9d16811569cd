"""Adaptation layer: LoRA and CALA by regex over parameter paths, the metaword (eq. 8), the
training partition, quantised updates and their accounting. Imports no model code."""
