"""World model: the sequence path (training) equals stepping (acting), resets included."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine.config import build_config
from recall2imagine.optim import make_optimizer, ssm_labels
from recall2imagine.world_model import SLICE, WorldModel, WorldModelNet

OBS_SHAPES = {"image": (8, 8, 3), "vector": (5,)}
B, T, A = 2, 6, 3


def world_model(overrides, dtype=jnp.float32):
    """A world model on its own config slice, as the agent builds it."""
    return WorldModel(OBS_SHAPES, A, build_config(["debug"], overrides).part(*SLICE), dtype)


# Small chunks so that chunks complete, are read and are evicted within the test's sequences.
HCAM = {"hcam.chunk": 2, "hcam.max_chunks": 3, "hcam.width": 8, "hcam.heads": 2}


@functools.lru_cache(maxsize=None)
def make_world_model(ssm_type):
    wm = world_model({"ssm_type": ssm_type, **(HCAM if ssm_type == "hcam" else {})})
    params = jax.jit(wm.init)(jax.random.PRNGKey(0))
    if ssm_type == "hcam":  # the episode clock starts at zero: make it matter here
        noise = lambda path, x: (jax.random.normal(jax.random.PRNGKey(5), x.shape)
                                 if "clock" in jax.tree_util.keystr(path) else x)
        params = jax.tree_util.tree_map_with_path(noise, params)
        assert any("clock" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
    return wm, params


def sequence_data():
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (B, T, 8, 8, 3)).astype(np.uint8),
           "vector": rng.normal(size=(B, T, 5)).astype(np.float32)}
    action = np.eye(A, dtype=np.float32)[rng.integers(0, A, (B, T))]
    # Row 0 starts fresh and restarts at t=3; row 1 continues the carry, restarts at t=2.
    is_first = np.array([[1, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]], bool)
    return obs, action, is_first


def busy_carry(wm, params, ssm_type):
    """A carry far from the initial one, so that carrying it over and resets both matter."""
    carry = wm.initial_carry(params, B)
    rng = np.random.default_rng(1)
    if ssm_type == "mimo":
        core = tuple(jnp.asarray(rng.normal(size=s.shape) + 1j * rng.normal(size=s.shape),
                                 jnp.complex64) for s in carry["core"])
    elif ssm_type == "hcam":  # a memory holding chunks: step through 9 random inputs
        obs, _, _ = sequence_data()
        embed = jax.jit(wm.encode)(params, obs)
        step = jax.jit(wm.obs_step)
        for t in range(9):
            carry, _ = step(params, carry, embed[:, t % T], jnp.asarray([t == 0] * B), jax.random.PRNGKey(t))
        core = carry["core"]
    else:
        core = jnp.asarray(rng.normal(size=carry["core"].shape), jnp.float32)
    classes = carry["stoch"].shape[-1]
    stoch = jnp.asarray(np.eye(classes)[rng.integers(0, classes, carry["stoch"].shape[:-1])],
                        jnp.float32)
    return {"core": core, "stoch": stoch, "action": jnp.ones((B, A)) / A}


@pytest.mark.parametrize("ssm_type", ["mimo", "gru", "hcam"])
def test_observe_equals_obs_step_loop_with_resets_inside(ssm_type):
    wm, params = make_world_model(ssm_type)
    obs, action, is_first = sequence_data()
    carry = busy_carry(wm, params, ssm_type)
    key = jax.random.PRNGKey(3)
    embed = jax.jit(wm.encode)(params, obs)
    last, outs = jax.jit(wm.observe)(params, carry, embed, action, is_first, key)

    step = jax.jit(wm.obs_step)
    keys = jax.random.split(key, T)  # observe uses one key per step, in order
    stepped = []
    for t in range(T):
        carry, out = step(params, carry, embed[:, t], is_first[:, t], keys[t])
        carry = {**carry, "action": action[:, t]}
        stepped.append(out)
    stepped = jax.tree.map(lambda *xs: np.stack(xs, 1), *stepped)

    for name in ("deter", "stoch", "post_logits", "prior_logits"):
        np.testing.assert_allclose(outs[name], stepped[name], atol=2e-5, rtol=2e-5, err_msg=name)
    # Every step's core state (jitted: op by op, HCAM's read-out took seconds).
    seq_cores = jax.jit(wm.core_states, static_argnums=(3,))(params, outs["core"], None, T)
    step_cores = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), stepped["core"])
    for seq_core, step_core in zip(jax.tree.leaves(seq_cores), jax.tree.leaves(step_cores)):
        np.testing.assert_allclose(seq_core, step_core, atol=2e-5, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(carry)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-5)
    # The busy carry mattered for row 1 before its reset, and the reset erased it:
    fresh_carry = wm.initial_carry(params, B)
    _, fresh = jax.jit(wm.observe)(params, fresh_carry, embed, action, is_first, key)
    assert not np.allclose(fresh["deter"][1, :2], outs["deter"][1, :2], atol=1e-4)
    np.testing.assert_allclose(fresh["deter"][1, 2:], outs["deter"][1, 2:], atol=2e-5, rtol=2e-5)


def test_features_hidden_is_ssm_state_for_mimo_and_deter_for_gru():
    mimo, params = make_world_model("mimo")
    names = mimo.feature_names(["stoch", "hidden"])
    carry = busy_carry(mimo, params, "mimo")
    state = {"core": carry["core"], "stoch": carry["stoch"], "deter": jnp.zeros((B, 32))}
    feats = mimo.features(state, names)
    layer = carry["core"][0]
    np.testing.assert_allclose(feats[:, 16:], np.concatenate([layer.real, layer.imag], -1))
    gru = world_model({"ssm_type": "gru"})
    assert gru.feature_names(["deter", "stoch", "hidden"]) == ("deter", "stoch")


def test_continuous_actions_outside_the_box_are_scaled_back_keeping_their_gradient():
    wm, params = make_world_model("mimo")
    stoch, first = jnp.zeros((1, 4, 4)), jnp.zeros((1,), bool)

    def core_input(action):
        return wm.net.apply(params, stoch, action, first, method=WorldModelNet.inputs).sum()

    outside = jnp.array([[3.0, -0.2, 0.1]])
    bounded = jnp.array([[1.0, -0.2, 0.1]])
    np.testing.assert_allclose(core_input(outside), core_input(bounded), rtol=1e-6)
    # Clipping would give a zero gradient for the first action dimension here.
    assert abs(float(jax.grad(core_input)(outside)[0, 0])) > 1e-6


def test_ssm_parameters_form_their_own_optimizer_group():
    wm, params = make_world_model("mimo")
    labels = ssm_labels(params)
    s5 = labels["params"]["core"]["layers_0"]["s5"]
    assert set(s5.values()) == {"ssm"} and set(s5) == {"Lambda_re", "Lambda_im", "B", "C", "D",
                                                        "log_step"}
    assert sum(l == "ssm" for l in jax.tree.leaves(labels)) == 6
    config = build_config(["debug"], {"model_opt.lr": 0.0, "ssm_opt.lr": 1.0,
                                      "model_opt.warmup": 0})
    opt = make_optimizer(config.model_opt, config.ssm_opt)

    @jax.jit
    def moved(params):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = opt.update(grads, opt.init(params), params)
        return jax.tree.map(lambda u: jnp.any(u != 0), updates)

    assert all(bool(m) == (l == "ssm")
               for m, l in zip(jax.tree.leaves(moved(params)), jax.tree.leaves(labels)))


def test_bfloat16_compute_keeps_ssm_state_complex64_and_loss_close_to_float32():
    wm32, params = make_world_model("mimo")
    wm16 = world_model({}, jnp.bfloat16)
    obs, action, is_first = sequence_data()
    data = {**obs, "action": action, "is_first": is_first | (np.arange(T) == 0),
            "reward": np.ones((B, T), np.float32), "is_terminal": np.zeros((B, T), bool)}
    key = jax.random.PRNGKey(0)
    loss32, _ = jax.jit(wm32.loss)(params, data, key)
    loss16, (outs, metrics) = jax.jit(wm16.loss)(params, data, key)
    assert all(s.dtype == jnp.complex64 for s in outs["core"])
    assert all(np.isfinite(float(v)) for v in metrics.values())
    np.testing.assert_allclose(loss16, loss32, rtol=0.05)


def test_ssm_dropout_applies_only_when_training():
    wm, params = make_world_model("mimo")
    dropout = world_model({"ssm.dropout": 0.5})
    obs, action, is_first = sequence_data()
    embed = jax.jit(wm.encode)(params, obs)
    carry, key = wm.initial_carry(params, B), jax.random.PRNGKey(0)
    deter = lambda model, training: jax.jit(model.observe, static_argnames="training")(
        params, carry, embed, action, is_first, key, training=training)[1]["deter"]
    np.testing.assert_allclose(deter(dropout, False), deter(wm, False), atol=1e-5)
    assert not np.allclose(deter(dropout, True), deter(wm, True), atol=1e-3)
