"""Tools that are not experiments: the step benchmark (``python -m
genjax.tools.benchmark``), its profiling helpers (``profiling``), and the
PyTorch yardstick for the transformer (``python -m genjax.tools.torch_baseline``).
"""
