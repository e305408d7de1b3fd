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
    config = pixelcnn_mnist.configure(config, preset)
    if preset == "cpu":
        # The 256-way head costs a tenth more a step than the Bernoulli one:
        # 900 steps (about 0.7 s each) keep the run within 15 minutes; 1,200
        # took 17 min 51 s.
        config.train.num_steps = 900
        config.train.eval_every = 900
    return config


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
            metrics={"eval/bits_per_dim": 1.135, "eval/classifier_score": 5.13,
                     "eval/classifier_score_data": 9.64, "eval/classes_hit": 10,
                     "eval/class_kl": 0.2, "eval/fd": 108.3, "eval/fd_floor": 4.86,
                     "eval/kid": 42.8, "eval/kid_floor": 0.49,
                     "eval/precision": 0.318, "eval/recall": 0.703,
                     "eval/density": 0.163, "eval/coverage": 0.204,
                     "eval/nfe": 784, "eval/sample_seconds": 61.9},
            units={"eval/bits_per_dim": "bits/dim", "eval/class_kl": "nats",
                   "eval/sample_seconds": "s"},
            command="python -m experiments.pixelcnn_mnist_8bit --preset=cpu "
                    "--workdir=/tmp/cmp_mnist_pcnn/pixelcnn_mnist_8bit "
                    "--config.data.manual_dir=../shared/data/mnist",
            date="2026-12-07", host="2-core CPU",
            wall_time="12 min 42 s (training and final evaluation)",
            notes="Trained by the head-to-head study (`python -m experiments."
                  "compare --dataset=mnist:../shared/data/mnist --preset=cpu "
                  "--workdir=/tmp/cmp_mnist_pcnn --experiments=pixelcnn_mnist,"
                  "pixelcnn_mnist_8bit`), which runs this exact config; the "
                  "wall time is its training and final evaluation, the machine "
                  "otherwise idle. The same network as pixelcnn_mnist with a "
                  "256-way softmax per pixel: an exact discrete likelihood of the "
                  "8-bit test images, no dequantisation (nats/example 616.6). 900 "
                  "steps of 32 at 1.4 steps/s, then 118 s of final evaluation "
                  "(10,000 test NLLs; 1,000 samples drawn pixel by pixel, each "
                  "stack on the 13 rows or columns the pixel reads, 62 s). Before "
                  "that sampler (2026-12-07), the same draws took 139 s and the "
                  "run 15 min 19 s, 19 s over the budget; before 900 steps, 1,200 "
                  "steps: 1.125 bits/dim, FD 117.5, in 17 min 51 s. Below "
                  "realnvp_mnist's 1.299 and gmm_mnist's 1.966 bits/dim."),
    ),
))

if __name__ == "__main__":
    cli.main("pixelcnn_mnist_8bit")
