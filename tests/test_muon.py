"""genjax.train.muon: the same updates as optax's Muon, batched by shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.train import muon

SHAPES = {"qkv": (16, 48), "out": (64, 16), "fc": (16, 64), "proj": (16, 16),
          "qkv2": (16, 48), "bias": (5,), "embed": (11, 16)}
IS_MUON = {k: len(s) == 2 and k != "embed" for k, s in SHAPES.items()}


def params():
    return {k: jax.random.normal(jax.random.key(i), s) for i, (k, s) in
            enumerate(SHAPES.items())}


def grads(t):
    return {k: jax.random.normal(jax.random.key(100 * t + i), s) for i, (k, s) in
            enumerate(SHAPES.items())}


def test_orthogonalize_pushes_singular_values_near_one():
    x = jax.random.normal(jax.random.key(0), (3, 16, 40)) * jnp.array([1e-3, 1.0, 1e3])[:, None, None]
    y = muon.orthogonalize(x)
    s = np.linalg.svd(np.asarray(y), compute_uv=False)
    assert s.min() > 0.6 and s.max() < 1.25
    # The same singular vectors: y ~ U V^T of x.
    u, _, vt = np.linalg.svd(np.asarray(x[1]), full_matrices=False)
    assert np.abs(np.asarray(y[1]) - u @ vt).max() < 0.35


def test_same_updates_as_optax_muon_on_matrices():
    p = params()
    mine = muon.muon(0.02, 1e-3, lambda _: IS_MUON, weight_decay=0.1)
    spec = {k: optax.contrib.MuonDimensionNumbers() if v else None for k, v in IS_MUON.items()}
    ref = optax.contrib.muon(0.02, weight_decay=0.1, adam_learning_rate=1e-3,
                             muon_weight_dimension_numbers=lambda _: spec)
    adam = optax.adam(1e-3)
    s_mine, s_ref, s_adam = mine.init(p), ref.init(p), adam.init(p)
    for t in range(4):
        g = grads(t)
        u_mine, s_mine = jax.jit(mine.update)(g, s_mine, p)
        u_ref, s_ref = ref.update(g, s_ref, p)
        u_adam, s_adam = adam.update(g, s_adam, p)
        for k, is_muon in IS_MUON.items():
            want = u_ref[k] if is_muon else u_adam[k]
            np.testing.assert_allclose(u_mine[k], want, rtol=2e-4, atol=2e-7, err_msg=k)


def test_matrices_of_one_shape_run_as_one_batch():
    # Two equal shapes (qkv, qkv2) and a transposed pair (out [64,16] runs
    # turned, beside fc [16,64]): three Newton-Schulz chains for five matrices.
    p = {k: v for k, v in params().items() if IS_MUON[k]}
    opt = muon.scale_by_muon()
    hlo = jax.jit(opt.update).lower(p, opt.init(p)).as_text()
    # Each iteration does three matmuls per chain: 5 steps x 3 chains x 3.
    assert hlo.count("dot_general") == 5 * 3 * 3


def test_non_matrix_is_refused():
    opt = muon.scale_by_muon()
    with pytest.raises(ValueError, match=r"matrices only.*\(5,\)"):
        opt.update({"b": jnp.ones(5)}, opt.init({"b": jnp.ones(5)}))


SHARDED_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np
from genjax.train import muon, step as step_lib
assert jax.device_count() == 8
shapes = [(16, 48)] * 8 + [(16, 16)] * 3   # a stack of 8 splits, one of 3 does not
p = {f"m{i}": jax.random.normal(jax.random.key(i), s) for i, s in enumerate(shapes)}
g = {k: jax.random.normal(jax.random.key(50 + i), v.shape) for i, (k, v) in enumerate(p.items())}
opt = muon.scale_by_muon()
mesh = step_lib.make_mesh(jax.devices())
rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
sharded = jax.jit(step_lib.under_mesh(lambda g, s: opt.update(g, s)[0], mesh),
                  out_shardings=rep)
u8 = sharded(jax.device_put(g, rep), jax.device_put(opt.init(p), rep))
def flops(compiled):
    cost = compiled.cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]
flops8 = flops(sharded.lower(jax.device_put(g, rep), jax.device_put(opt.init(p), rep)).compile())
single = jax.jit(lambda g, s: opt.update(g, s)[0])
args1 = (jax.device_put(g, jax.devices()[0]), jax.device_put(opt.init(p), jax.devices()[0]))
u1 = single(*args1)
flops1 = flops(single.lower(*args1).compile())
for k in p:
    np.testing.assert_allclose(np.asarray(u8[k]), np.asarray(u1[k]), rtol=1e-4, atol=1e-6)
print(flops8 / flops1)
"""


def test_stacks_are_split_over_the_data_axis():
    from conftest import run_python  # pylint: disable=import-outside-toplevel

    proc = run_python(["-c", SHARDED_SCRIPT], devices=8, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each device orthogonalised one matrix of the 8-matrix stack (and all
    # of the 3-matrix one, which 8 devices do not divide), then the shares
    # were gathered: the same updates as on one device for about a quarter
    # of its work (XLA's count of the program one device runs).
    share = float(proc.stdout.strip().splitlines()[-1])
    assert share < 0.4, share
