"""genjax: functional JAX research code for neural generative models.

A model is a pure Flax Linen module, an objective is a pure function of
``(params, batch, rng)`` returning ``(loss, metrics)``, and one training loop
(``genjax.train``) turns any objective into a jitted, data-parallel step.
"""

__version__ = "0.1.0"
