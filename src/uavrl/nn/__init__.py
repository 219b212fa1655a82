"""Torch modules: actor-critic models and action heads."""
