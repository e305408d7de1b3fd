"""Every registered experiment and preset on 8 simulated devices.

One subprocess with 8 CPU devices runs ``genjax.tools.devices``: the smoke
presets train and evaluate end to end (without the sample-quality protocol,
whose domain classifiers' training does not depend on the devices), but
those whose model already does so on 8 devices in its family's test
(``COVERED``), which build their input pipeline and lower their train
step; the cpu presets build their input pipeline and lower their train
step with its shardings, and the paper presets build their run and shard
one real batch (compiling them all takes minutes here: ``python -m
genjax.tools.devices`` does it). A global batch that 8
devices do not divide must fail with the one-line error naming the nearest
batch sizes that work; every other preset must start.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from genjax import registry

from conftest import run_python

# Smoke presets whose model trains and evaluates on 8 devices in its family's
# test (the U-Net on digits, the DCGAN on digits, the GPT, the VAE on digits),
# or whose parts do elsewhere: the score SDE is the ddpm U-Net with the
# ScoreSDETask step that score_toy2d trains here, the denoising diffusion GAN
# the U-Net with the GAN's two-player update (test_gan); vae_mnist is
# vae_digits' VAETask and MLP on 28x28 images (test_train); realnvp_mnist is
# the MultiScaleFlow and FlowTask that glow_mnist trains here, with affine
# couplings in place of Glow's; pixelcnn_mnist_8bit is the gated PixelCNN
# that pixelcnn_mnist trains here, with a 256-way head; flow_matching_mnist
# is the score SDE's task (FlowMatchingTask extends the ScoreSDETask that
# score_toy2d trains here) on the ddpm U-Net.
COVERED = ("ddpm_mnist", "ddpm_cifar10", "dcgan_mnist", "gpt_shakespeare_char",
           "vae_digits", "score_sde_mnist", "ddgan_mnist", "vae_mnist", "realnvp_mnist",
           "pixelcnn_mnist_8bit", "flow_matching_mnist")


@pytest.fixture(scope="module")
def matrix(shared_data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("devices")
    proc = run_python(
        ["-m", "genjax.tools.devices", "--json", "--train=smoke",
         f"--workdir={workdir}",
         # These smoke runs' models and code paths compile, train and
         # evaluate on 8 devices in their own tests (test_diffusion,
         # test_gan, test_lm, test_train); here they are lowered.
         "--lower_only=" + ",".join(["cpu"] + [f"{name}:smoke" for name in COVERED]),
         # The paper presets' models are the cpu presets' (wider, deeper):
         # their runs are built and given a sharded batch; tracing their
         # steps costs a minute here (python -m genjax.tools.devices
         # --lower_only=paper does it).
         "--build_only=paper",
         # The domain classifiers' training does not depend on the devices
         # and costs a minute here; the protocol on several devices is
         # tested by test_eval_exact.py and the families' own tests.
         "--config.eval.sample_quality.num_samples=0",
         "--config.eval.sample_quality.num_samples_during_training=0",
         # One evaluation, at the end: the mid-run one repeats it (on MNIST,
         # the whole test split again), and evaluating twice is tested by
         # each family's own smoke run.
         "--config.train.eval_every=1000",
         # The first 200 test examples: 8 devices evaluate them with padding
         # and masks as they would the whole split, which the families'
         # own tests evaluate (on MNIST, 10,000 images a run).
         "--config.eval.num_examples=200",
         # The probability-flow likelihood on several devices is tested by
         # test_eval_exact.py (score_toy2d on 1 to 8 devices).
         "--config.eval.likelihood_num_examples=0"],
        devices=8, timeout=900, env={"TFDS_DATA_DIR": str(shared_data_dir)})
    rows = [json.loads(line) for line in proc.stdout.splitlines()
            if line.startswith("{")]
    return proc, {(r["experiment"], r["preset"]): r for r in rows}, workdir


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_experiment_and_preset_starts_on_eight_devices(matrix):
    proc, rows, _ = matrix
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = {(name, preset) for name, exp in registry.load_all().items()
                for preset in exp.presets}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["devices"] == 8, key
        batch = row["batch"]
        if batch % 8:
            # e.g. a paper's batch of 100: one line naming 96 and 104.
            lo = batch - batch % 8
            assert row["status"] == "config error", (key, row)
            assert f"train.batch_size={batch}" in row["error"], row
            assert "8 devices" in row["error"] and f"{max(lo, 8)} or {lo + 8}" in row["error"]
        else:
            assert row["status"] == "ok", (key, row)
            if row["mode"] != "train":
                assert row["per_device_batch"] * 8 == batch, (key, row)


@pytest.mark.slow
@pytest.mark.subprocess
def test_smoke_presets_train_and_evaluate_on_eight_devices(matrix):
    _, rows, workdir = matrix
    smoke = {k: r for k, r in rows.items() if k[1] == "smoke" and
             k[0] not in COVERED}
    assert smoke and all(r["mode"] == "train" for r in smoke.values())
    for key, row in smoke.items():
        assert row["status"] == "ok" and row["finite"], (key, row)
        assert (workdir / f"{key[0]}_smoke" / "eval.json").is_file(), key
    # The 32x32 colour paths: the CIFAR-10 experiments' smoke presets train on
    # synthetic colour shapes, and their other presets, on CIFAR-10's stand-in
    # (no download here), compile.
    assert rows["dcgan_cifar10", "cpu"]["stand_in"] == "shapes32"
    grid = workdir / "dcgan_cifar10_smoke" / "samples" / "samples_final.png"
    assert np.asarray(Image.open(grid)).shape[-1] == 3  # colour samples
