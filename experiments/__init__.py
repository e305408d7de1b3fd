"""Registered experiments: one module per experiment, each a config recipe.

Run one with ``python -m experiments.<name> --workdir=DIR [--preset=P]``;
``python -m experiments`` lists them all.
"""
