"""Parameter sharding (``config.mesh.fsdp``) on 8 simulated devices.

The transformer and the U-Net train a few steps on a data x fsdp mesh of
8 x 1 (pure data parallelism) and 2 x 4 devices (the transformer also on
1 x 8): the losses and the
parameters agree to float tolerance, and each device holds about 1/fsdp of
the state. A run trained with fsdp = 4 resumes onto pure data parallelism.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from genjax.config import ConfigError
from genjax.train import step as step_lib

from conftest import run_python

STEPS = 3
FSDP = (1, 4, 8)

_CHILD = f"""
import json, sys
import jax, numpy as np
from experiments import ddpm_mnist, gpt_shakespeare_char
from genjax.train import loop, run as run_lib, step as step_lib

def configs():
    gpt = gpt_shakespeare_char.get_config("smoke")
    gpt.data.manual_dir = sys.argv[1]
    gpt.model.width, gpt.model.num_heads = 64, 4
    unet = ddpm_mnist.get_config("smoke")
    unet.data.name = "digits"
    return {{"gpt": (gpt, gpt_shakespeare_char), "unet": (unet, ddpm_mnist)}}

out = {{}}
for name, (config, module) in configs().items():
    config.train.batch_size = 16
    config.mesh.fsdp_min_size = 256
    for fsdp in {FSDP} if name == "gpt" else (1, 4):
        config.mesh.fsdp = fsdp
        run = run_lib.build(config, "/nonexistent", module.EXPERIMENT.make_task)
        state = run.init_state_fn()
        step = run_lib.make_step(run)
        it = run_lib.make_train_iterator(run)
        losses = []
        for _ in range({STEPS}):
            state, metrics = step(state, step_lib.to_global(next(it), run.mesh))
            losses.append(float(metrics["loss"]))
        params = jax.tree.leaves(jax.device_get(state.params))
        out.setdefault(name, {{}})[fsdp] = dict(
            mesh=dict(run.mesh.shape), losses=losses,
            params=[np.asarray(p, np.float64).ravel()[:64].tolist() for p in params],
            bytes=step_lib.bytes_per_device(state),
            sharded=sum(1 for s in jax.tree.leaves(run.state_sharding)
                        if not s.is_fully_replicated))

# The paper GPT's state per device, from shapes alone (nothing is allocated).
paper = gpt_shakespeare_char.get_config("paper")
paper.data.manual_dir = sys.argv[1]
for fsdp in (1, 8):
    paper.mesh.fsdp = fsdp
    run = run_lib.build(paper, "/nonexistent", gpt_shakespeare_char.EXPERIMENT.make_task)
    out.setdefault("paper_gpt", {{}})[fsdp] = step_lib.bytes_per_device(run.abstract_state)

# Trained sharded along fsdp = 4, resumed on pure data parallelism.
config, module = configs()["gpt"]
config.train.batch_size = 16
config.mesh.fsdp = 4
config.mesh.fsdp_min_size = 256
loop.train_and_evaluate(config, sys.argv[2], module.EXPERIMENT.make_task)
config.mesh.fsdp = 1
config.train.num_steps = 30
out["resumed"] = loop.train_and_evaluate(config, sys.argv[2], module.EXPERIMENT.make_task)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    from conftest import REPO  # pylint: disable=import-outside-toplevel
    text_dir = REPO.parent / "shared" / "data" / "tiny_shakespeare"
    if not (text_dir / "input.txt").is_file():
        pytest.skip(f"needs {text_dir}/input.txt")
    workdir = tmp_path_factory.mktemp("fsdp") / "wd"
    proc = run_python(["-c", _CHILD, str(text_dir), str(workdir)], devices=8,
                      timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.needs_data
@pytest.mark.parametrize("model", ["gpt", "unet"])
def test_fsdp_meshes_train_like_data_parallelism(sharded, model):
    runs = sharded[model]
    assert runs["1"]["mesh"] == {"data": 8, "fsdp": 1}
    assert runs["4"]["mesh"] == {"data": 2, "fsdp": 4}
    if model == "gpt":
        assert runs["8"]["mesh"] == {"data": 1, "fsdp": 8}
    ref = runs["1"]
    assert ref["sharded"] == 0
    for fsdp in sorted(set(runs) - {"1"}):
        run = runs[fsdp]
        assert run["sharded"] > 0
        np.testing.assert_allclose(run["losses"], ref["losses"], rtol=2e-5)
        for got, want in zip(run["params"], ref["params"]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        # Each device holds about 1/fsdp of the state (small arrays whole).
        ratio = ref["bytes"] / run["bytes"]
        assert 0.7 * int(fsdp) < ratio <= int(fsdp), (fsdp, ratio)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.needs_data
def test_paper_gpt_state_per_device_drops_by_the_fsdp_factor(sharded):
    full, split = sharded["paper_gpt"]["1"], sharded["paper_gpt"]["8"]
    assert full > 100e6  # ~10.7M parameters, Adam's two moments, fp32
    assert 7.5 < full / split <= 8


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.needs_data
def test_fsdp_checkpoint_resumes_on_pure_data_parallelism(sharded):
    resumed = sharded["resumed"]
    assert all(np.isfinite(v) for v in resumed.values())
    assert "eval/loss" in resumed


def test_state_shardings_rule():
    mesh = step_lib.make_mesh(jax.devices()[:1])
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1}
    with pytest.raises(ConfigError, match=r"mesh.fsdp=3 must divide the 1 devices"):
        step_lib.make_mesh(jax.devices()[:1], fsdp=3)
    tree = {"big": jax.ShapeDtypeStruct((64, 384), np.float32),
            "small": jax.ShapeDtypeStruct((8,), np.float32)}
    shardings = step_lib.state_shardings(tree, mesh, min_size=16)
    assert all(s.is_fully_replicated for s in jax.tree.leaves(shardings))
