"""Evaluation shared by every family: image grids, likelihood helpers."""
