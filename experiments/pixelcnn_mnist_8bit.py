"""Gated PixelCNN on 8-bit MNIST: exact bits/dim with a 256-way softmax.

The same network as ``pixelcnn_mnist`` with a softmax over the 256
intensities of each pixel (van den Oord et al. 2016): an exact discrete
likelihood, no dequantisation, in bits/dim on the scale the flows and the
diffusion models report:

    python -m experiments.pixelcnn_mnist_8bit --preset=cpu \\
        --workdir=/tmp/pixelcnn_mnist_8bit --config.data.manual_dir=../shared/data/mnist
"""

from experiments import pixelcnn_mnist
from genjax import cli, registry
from genjax.tasks import pixelcnn

PRESETS = pixelcnn_mnist.PRESETS


def get_config(preset: str = "cpu"):
    """The recipe for ``preset``: smoke (seconds), cpu (~15 min), paper."""
    config = pixelcnn.base_config("mnist")
    config.model.distribution = "categorical"
    return pixelcnn_mnist.configure(config, preset)


EXPERIMENT = registry.register(registry.Experiment(
    name="pixelcnn_mnist_8bit",
    family="autoregressive",
    dataset="mnist",
    paper="van den Oord et al. 2016, Conditional Image Generation with PixelCNN Decoders",
    get_config=get_config,
    presets=PRESETS,
    make_task=pixelcnn.PixelCNNTask,
))

if __name__ == "__main__":
    cli.main("pixelcnn_mnist_8bit")
