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
    results=(
        registry.Result(
            preset="cpu",
            metrics={"eval/bits_per_dim": 1.125, "eval/classifier_score": 5.02,
                     "eval/classifier_score_data": 9.64, "eval/classes_hit": 10,
                     "eval/class_kl": 0.212, "eval/fd": 117.5, "eval/fd_floor": 4.86,
                     "eval/kid": 46.9, "eval/kid_floor": 0.49,
                     "eval/precision": 0.348, "eval/recall": 0.745,
                     "eval/density": 0.168, "eval/coverage": 0.212,
                     "eval/nfe": 784, "eval/sample_seconds": 119.6},
            units={"eval/bits_per_dim": "bits/dim", "eval/class_kl": "nats",
                   "eval/sample_seconds": "s"},
            command="python -m experiments.pixelcnn_mnist_8bit --preset=cpu "
                    "--workdir=/tmp/pixelcnn_mnist_8bit "
                    "--config.data.manual_dir=../shared/data/mnist",
            date="2026-12-07", host="2-core CPU", wall_time="17 min 51 s",
            notes="The same network and schedule as pixelcnn_mnist (1,200 steps "
                  "of 32, 1.4 steps/s) with a 256-way softmax per pixel: an "
                  "exact discrete likelihood of the 8-bit test images, no "
                  "dequantisation (nats/example 611.4). Below realnvp_mnist's "
                  "1.299 and gmm_mnist's 1.966. The run overshoots the 15-minute "
                  "budget: training about 14 min, the final evaluation 174 s "
                  "(10,000 test NLLs; 1,000 samples drawn pixel by pixel, "
                  "120 s)."),
    ),
))

if __name__ == "__main__":
    cli.main("pixelcnn_mnist_8bit")
