"""Packaging for genjax.

The distribution is called ``genjax-research``: the name ``genjax`` on PyPI
belongs to an unrelated probabilistic-programming library. The import package
is still ``genjax``.
"""

import setuptools

# Version ranges are the ones tested (see README, "Tested with"); the upper
# bounds guard against the API breaks that flax, orbax and jax ship in minor
# releases.
INSTALL_REQUIRES = [
    "jax>=0.7.0,<0.11",
    "flax>=0.11.0,<0.13",
    "optax>=0.2.4,<0.3",
    "orbax-checkpoint>=0.11.20,<0.13",
    "tensorflow-datasets>=4.9.9,<5",
    "grain>=0.2.12,<0.3",
    "ml_collections>=1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "pillow>=10.0",
    "scikit-learn>=1.4",
    # SciPy's OpenBLAS, under jaxlib's LAPACK kernels, set to one thread on
    # several CPU devices (genjax.train.step.single_thread_lapack).
    "scipy>=1.11",
    "threadpoolctl>=3.1",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    # Adaptive ODE solvers (the probability-flow ODE and flow matching).
    "diffrax>=0.7,<0.8",
]

EXTRAS_REQUIRE = {
    # The test suite and the notebook runner.
    "test": [
        "pytest>=8.0",
        "chex>=0.1.89",
        "pytest-xdist>=3.5",
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
        "scipy>=1.11",
        "matplotlib>=3.8",
    ],
    # TensorFlow is only needed to *prepare* stock TFDS datasets downloaded
    # from the internet; genjax itself never imports it.
    "tfds": ["tensorflow-cpu>=2.16"],
}

setuptools.setup(
    name="genjax-research",
    version="0.1.0",
    description="Functional JAX research code for neural generative models.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # experiments/ ships too, so that `python -m experiments.<name>` works
    # after `pip install .` or from a wheel, outside the clone.
    packages=setuptools.find_packages(include=["genjax", "genjax.*",
                                               "experiments"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    license="Apache-2.0",
)
