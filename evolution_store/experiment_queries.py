"""Reads of experiments (placeholder until the experiments helper lands its module)."""
