"""Diffusion samplers and the Lightning framework that trains models for them and evaluates them.

Layers, top to bottom (imports point down only; tests/test_layers.py checks it): experiments, callbacks,
evaluation, modules, tuning, metrics, samplers, oracles, diffusion, then config, schema and io; the
networks (models/) and data (datamodules/) packages sit below all of them.
"""
