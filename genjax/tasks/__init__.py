"""Tasks bind a model, its objective, evaluation and sampler for the loop."""

from genjax.tasks.base import Task
from genjax.tasks.gan import GANTask
from genjax.tasks.vae import VAETask
