"""The agent end to end on a synthetic memory task: learning, imagination, acting,
checkpoints, and data parallelism over two CPU devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine.agent import Agent
from recall2imagine.behavior import imagination_starts
from recall2imagine.checkpoint import Checkpointer
from recall2imagine.config import build_config

OBS_SPACE = gym.spaces.Dict({
    "image": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
    "vector": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
VECTOR_SPACE = gym.spaces.Dict({"vector": OBS_SPACE["vector"]})  # cheaper to compile
# Debug sizes learn too slowly at the default 1e-4 to show progress in 100 steps.
FAST = {"model_opt.lr": 1e-3, "ssm_opt.lr": 1e-3}
WORLD_MODEL_TERMS = ("loss/image", "loss/vector", "loss/reward", "loss/cont", "loss/dyn",
                     "loss/rep")


def memory_batch(batch, length, episode, seed=0, image=True):
    """Episodes of ``episode`` steps: the first observation shows a bit (vector and red
    channel), a green row marks the step, and the last step pays 1 if the action
    before it matched the bit. Random one-hot actions over 2 choices."""
    rng = np.random.default_rng(seed)
    data = {"vector": np.zeros((batch, length, 4), np.float32),
            "image": np.zeros((batch, length, 8, 8, 3), np.uint8),
            "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (batch, length))],
            "reward": np.zeros((batch, length), np.float32)}
    step = np.arange(length) % episode
    for name in ("is_first", "is_last", "is_terminal"):
        data[name] = np.broadcast_to(step == (0 if name == "is_first" else episode - 1),
                                     (batch, length)).copy()
    for b in range(batch):
        for t in range(length):
            k = step[t]
            bit = rng.integers(2) if k == 0 else bit
            data["vector"][b, t] = [2 * bit - 1 if k == 0 else 0, k == 0, k / episode, 1]
            data["image"][b, t, :, :, 0] = 255 * bit if k == 0 else 0
            data["image"][b, t, k, :, 1] = 255
            if k == episode - 1:
                data["reward"][b, t] = float(data["action"][b, t - 1].argmax() == bit)
    if not image:
        del data["image"]
    return data


@pytest.fixture(scope="module")
def agent():
    return Agent(OBS_SPACE, gym.spaces.Discrete(2), build_config(["debug"], FAST))


@pytest.fixture(scope="module")
def batch():
    return memory_batch(2, 16, 8)


@pytest.fixture(scope="module")
def trained(agent, batch):
    """(initial state, state after 100 steps on one fixed batch, metrics of every step)."""
    initial = state = agent.init(0)
    history = []
    for i in range(100):
        state, metrics = agent.train(state, batch, jax.random.PRNGKey(i))
        history.append({k: float(v) for k, v in metrics.items()})
    return initial, state, history


def test_hundred_steps_lower_every_world_model_loss_without_nans(trained):
    _, _, history = trained
    for step, metrics in enumerate(history):
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        assert not bad, f"non-finite metrics at step {step}: {bad}"
    for term in WORLD_MODEL_TERMS + ("loss/model",):
        first, last = history[0][term], np.mean([m[term] for m in history[-5:]])
        assert last < first, f"{term} did not go down: {first} -> {last}"
    expected = set(WORLD_MODEL_TERMS) | {"loss/model", "loss/actor", "loss/critic",
                                        "actor/entropy", "imag/return", "grad_norm/wm",
                                        "grad_norm/actor", "grad_norm/critic"}
    assert expected <= set(history[0])


def test_state_counts_steps_and_slow_critic_trails_critic(trained):
    initial, state, _ = trained
    assert int(state["step"]) == 100
    critic, slow = state["params"]["critic"], state["params"]["slow_critic"]
    initial_critic = initial["params"]["critic"]
    gap = lambda a, b: max(float(jnp.abs(x - y).max()) for x, y in
                           zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert 0 < gap(slow, initial_critic) < gap(critic, initial_critic)


def test_imagination_trajectory_shapes_and_weights(agent, trained, batch):
    _, state, _ = trained
    params = state["params"]
    wm, behavior = agent.wm, agent.behavior

    @jax.jit
    def imagine(params, batch, key):
        embed = wm.encode(params["wm"], {k: batch[k] for k in wm.obs_keys})
        carry = wm.initial_carry(params["wm"], 2)
        _, outs = wm.observe(params["wm"], carry, embed, batch["action"], batch["is_first"], key)
        start = imagination_starts(outs, batch["is_terminal"])
        return start, behavior.imagine(params["wm"], params["actor"], start, key)

    start, traj = imagine(params, batch, jax.random.PRNGKey(0))
    n, h = 2 * 16, agent.config.imag_horizon  # every posterior state starts a rollout
    shapes = {k: v.shape for k, v in traj.items()}
    assert shapes == {"deter": (h + 1, n, 32), "stoch": (h + 1, n, 4, 4),
                      "hidden": (h + 1, n, 2 * 8), "action": (h + 1, n, 2),
                      "reward": (h + 1, n), "cont": (h + 1, n), "weight": (h + 1, n)}
    np.testing.assert_allclose(traj["deter"][0], start["deter"])
    np.testing.assert_allclose(traj["action"].sum(-1), 1.0, atol=1e-5)
    terminal = np.asarray(start["is_terminal"], np.float32)
    np.testing.assert_allclose(traj["weight"][0], 1.0 - terminal)
    assert np.all(np.diff(traj["weight"], axis=0) <= 1e-6)  # cumulative continue weights
    assert np.all(traj["weight"][:, terminal == 1] == 0.0)


def test_policy_resets_carry_on_is_first_and_uses_it_otherwise(agent, trained):
    _, state, _ = trained
    n = 3
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (n, 8, 8, 3)).astype(np.uint8),
           "vector": rng.normal(size=(n, 4)).astype(np.float32),
           "is_first": np.ones(n, bool), "reward": np.zeros(n, np.float32)}
    fresh = agent.initial_carry(n)
    assert {k: jax.tree.map(lambda x: x.shape, v) for k, v in fresh.items()} == {
        "core": ((n, 8),), "stoch": (n, 4, 4), "action": (n, 2)}
    assert fresh["core"][0].dtype == jnp.complex64
    key = jax.random.PRNGKey(7)
    action, after_first = agent.policy(state, fresh, obs, key)
    busy = jax.tree.map(lambda x: x + 0.5, after_first)
    action_busy, after_busy = agent.policy(state, busy, obs, key)
    # is_first discards whatever the carry held.
    np.testing.assert_allclose(action_busy, action)
    for a, b in zip(jax.tree.leaves(after_busy), jax.tree.leaves(after_first)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert action.shape == (n, 2) and set(np.unique(np.asarray(action))) <= {0.0, 1.0}
    np.testing.assert_allclose(after_first["action"], action)
    # Without is_first the carry is used: a different carry changes the next state.
    going = {**obs, "is_first": np.zeros(n, bool)}
    _, from_fresh = agent.policy(state, after_first, going, key)
    _, from_busy = agent.policy(state, busy, going, key)
    assert not np.allclose(from_fresh["core"][0], from_busy["core"][0])
    with pytest.raises(ValueError, match="mode"):
        agent.policy(state, fresh, obs, key, mode="explore")


def test_eval_actions_are_the_actor_mode_and_train_actions_samples(agent, trained):
    _, state, _ = trained
    params = state["params"]
    n = 64
    latent = {"core": (jnp.zeros((n, 8), jnp.complex64),), "stoch": jnp.zeros((n, 4, 4)),
              "deter": jax.random.normal(jax.random.PRNGKey(0), (n, 32))}
    act = jax.jit(agent.behavior.act, static_argnames="greedy")
    probs = jax.jit(lambda p, s: agent.behavior.policy(p, s).probs)(params["actor"], latent)
    greedy = [act(params["actor"], latent, jax.random.PRNGKey(i), greedy=True) for i in range(2)]
    np.testing.assert_array_equal(greedy[0], greedy[1])
    np.testing.assert_array_equal(greedy[0], jax.nn.one_hot(probs.argmax(-1), 2))
    sampled = act(params["actor"], latent, jax.random.PRNGKey(0), greedy=False)
    assert 0 < np.sum(np.asarray(sampled) != np.asarray(greedy[0])) < 2 * n


def test_discrete_actions_convert_between_env_and_replay(agent):
    env = np.array([1, 0, 1])
    stored = agent.replay_action(env)
    np.testing.assert_array_equal(stored, [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(agent.env_action(stored), env)


def test_checkpoint_roundtrip_restores_a_trainable_state(agent, trained, batch, tmp_path):
    _, state, _ = trained
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(100, state, {"step": 100})
    restored, _, _ = checkpointer.restore(agent.init(1))
    checkpointer.close()
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    key = jax.random.PRNGKey(5)
    _, from_restored = agent.train(restored, batch, key)
    _, from_original = agent.train(state, batch, key)
    assert {k: float(v) for k, v in from_restored.items()} == pytest.approx(
        {k: float(v) for k, v in from_original.items()})


def test_the_uniform_actor_regulariser_pushes_a_ruled_out_action_back_and_needs_discrete_actions(
        agent, trained, batch):
    """actent_kind "uniform": with the actor's output biased so that action 1 is nearly ruled
    out, the regulariser still pulls that action's logit up; the entropy's pull has vanished."""
    from recall2imagine import behavior as behavior_module
    params = trained[1]["params"]
    wm = agent.wm
    data = agent._checked({k: jnp.asarray(batch[k]) for k in agent.batch_keys})
    outs = jax.jit(lambda wm_params: wm.loss(wm_params, data, jax.random.PRNGKey(0))[1][0])(params["wm"])
    starts = imagination_starts(outs, data["is_terminal"])  # (jitted: op by op took seconds)
    is_out_bias = lambda path: all(part in jax.tree_util.keystr(path) for part in ("out", "bias"))
    actor = jax.tree_util.tree_map_with_path(  # output bias: +30 for action 0
        lambda path, x: x.at[0].add(30.0) if is_out_bias(path) else x, params["actor"])
    bias = lambda tree: next(g for path, g in jax.tree_util.tree_leaves_with_path(tree) if is_out_bias(path))
    pulls, metrics = {}, {}
    for kind in ("entropy", "uniform"):
        # A large scale: the regulariser outweighs the (vanishing) return term.
        config = agent.config.update({"actent_kind": kind, "actent": 10.0, "loss_scales.actor": 1.0})
        behavior = behavior_module.Behavior(wm, True, 2, config.part(behavior_module.OPTIONS))
        loss = lambda actor_params: behavior.actor_loss(
            actor_params, params["wm"], params["critic"], trained[1]["retnorm"], starts,
            jax.random.PRNGKey(1))
        grads, (_, _, _, metrics[kind], _) = jax.jit(jax.grad(loss, has_aux=True))(actor)
        pulls[kind] = -float(bias(grads)[1])
    assert pulls["uniform"] > 1.0 and abs(pulls["entropy"]) < 1e-3, pulls
    assert "actor/uniform_ce" in metrics["uniform"] and "actor/uniform_ce" not in metrics["entropy"]
    assert float(metrics["uniform"]["actor/uniform_ce"]) > 10.0  # ~30 / 2 with one ruled-out action
    config = agent.config.update({"actent_kind": "uniform"})
    with pytest.raises(ValueError, match="actent_kind 'uniform' needs discrete actions"):
        behavior_module.Behavior(wm, False, 2, config.part(behavior_module.OPTIONS))


def test_gru_agent_with_box_actions_trains_by_backprop_and_acts_in_bounds():
    # No entropy bonus: any actor gradient must come back through the imagined dynamics,
    # here from a random half of the posterior states.
    # With the replay value loss on: the critic also fits the replayed sequences' returns.
    config = build_config(["debug"], {"ssm_type": "gru", "actent": 0.0, "imag_starts": 0.5,
                                      "loss_scales.repval": 0.3})
    box = gym.spaces.Box(-2.0, 2.0, (2,), np.float32)
    agent = Agent(VECTOR_SPACE, box, config)
    state = agent.init(0)
    data = memory_batch(2, 16, 8, seed=1, image=False)
    data["action"] = agent.replay_action(np.random.default_rng(0).uniform(-2, 2, (2, 16, 2)))
    for i in range(3):
        state, metrics = agent.train(state, data, jax.random.PRNGKey(i))
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    assert not bad, f"non-finite metrics: {bad}"
    assert float(metrics["grad_norm/actor"]) > 0
    assert float(metrics["loss/repval"]) > 0 and float(metrics["critic/replay_fit"]) > 0
    obs = {k: v[:, 0] for k, v in data.items()}
    action, _ = agent.policy(state, agent.initial_carry(2), obs, jax.random.PRNGKey(0))
    assert action.dtype == jnp.float32 and np.all(np.abs(np.asarray(action)) <= 1.0)
    env = agent.env_action(action)
    assert np.all(np.abs(env) <= 2.0)
    np.testing.assert_allclose(agent.replay_action(env), action, atol=1e-6)


def test_the_replay_value_loss_trains_the_sequence_core_and_only_when_on(agent, batch, trained):
    """The critic's loss on replayed states reaches the S5 core's parameters (what carries a
    cue to its reward), so the world model learns to keep what the returns depend on."""
    behavior, wm = agent.behavior, agent.wm
    # A trained critic: a fresh one's output layer starts at zero and passes no gradient back.
    params = trained[1]["params"]
    data = agent._checked({k: jnp.asarray(batch[k]) for k in agent.batch_keys})

    @jax.jit
    def core_gradients(wm_params):
        def replay_loss(wm_params):
            outs = wm.loss(wm_params, data, jax.random.PRNGKey(0))[1][0]
            targets = behavior.replay_targets(params["critic"], outs, data)
            return behavior.replay_value_loss(params["critic"], outs, targets)
        return jax.tree.map(lambda g: jnp.abs(g).max(), jax.grad(replay_loss)(wm_params))

    grads = {jax.tree_util.keystr(path): float(g)
             for path, g in jax.tree_util.tree_leaves_with_path(core_gradients(params["wm"]))}
    s5 = {path: g for path, g in grads.items() if "['core']" in path and "['s5']" in path}
    assert s5, f"no S5 parameters among {list(grads)}"
    assert min(s5.values()) > 0, s5
    # Off by default (R2I); the agent's metrics name the loss only when it is on.
    assert agent.config.loss_scales.repval == 0
    assert "loss/repval" not in agent.train(agent.init(0), batch, jax.random.PRNGKey(0))[1]


def test_model_updates_train_the_world_model_alone_on_each_group_then_with_the_actor_critic(agent):
    """run.model_updates 2: row b * 2 + k of a 4-row batch is group k's row b; the update
    equals a world-model step alone on group 0 followed by the one-update step on group 1."""
    twice = Agent(OBS_SPACE, gym.spaces.Discrete(2), build_config(["debug"], {**FAST, "run.model_updates": 2}))
    state, rows, key = twice.init(0), memory_batch(4, 16, 8, seed=1), jax.random.PRNGKey(5)
    new_state, metrics = twice.train(state, rows, key)
    assert "loss/model_only" in metrics and np.isfinite(float(metrics["loss/model_only"]))

    # By hand: the same initial state (same seed, same shapes), group 0's rows 0 and 2 train the
    # world model alone with the key the step derives for it, then group 1's rows 1 and 3 the rest.
    group = lambda k: {name: value[k::2] for name, value in rows.items()}
    first = agent._checked({name: jnp.asarray(group(0)[name]) for name in agent.batch_keys})
    only_key = jax.random.split(jax.random.fold_in(jax.random.split(key, 3)[0], 1), 1)[0]
    start = agent.init(0)
    wm_params, opt_wm = jax.jit(lambda p, o, b, k: agent._wm_step(p, o, p["wm"], b, k, 0, {})[:2])(
        start["params"], start["opt"]["wm"], first, only_key)
    by_hand = {**start, "params": {**start["params"], "wm": wm_params},
               "opt": {**start["opt"], "wm": opt_wm}}
    by_hand, hand_metrics = agent.train(by_hand, group(1), key)
    for name in ("wm", "actor", "critic"):
        for ours, theirs in zip(jax.tree.leaves(new_state["params"][name]),
                                jax.tree.leaves(by_hand["params"][name])):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["loss/model"], hand_metrics["loss/model"], rtol=1e-5)
    # A batch that does not split into the groups is refused by name.
    with pytest.raises(AssertionError, match="model_updates 2"):
        twice.train(state, memory_batch(3, 16, 8), key)


def test_hcam_agent_trains_acts_and_checkpoints(tmp_path):
    # Chunks of 4 steps in 16-step windows: memory is written and read while training.
    config = build_config(["debug"], {"ssm_type": "hcam", "hcam.chunk": 4, "hcam.width": 8,
                                      "hcam.heads": 2, "hcam.n_layers": 1, "imag_starts": 0.5})
    agent = Agent(VECTOR_SPACE, gym.spaces.Discrete(2), config)
    state = agent.init(0)
    data = memory_batch(2, 16, 8, seed=1, image=False)
    for i in range(2):
        state, metrics = agent.train(state, data, jax.random.PRNGKey(i))
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    assert not bad, f"non-finite metrics: {bad}"
    assert float(metrics["grad_norm/actor"]) > 0 and float(metrics["grad_norm/wm"]) > 0
    obs = {k: v[:, 0] for k, v in data.items()}
    action, carry = agent.policy(state, agent.initial_carry(2), obs, jax.random.PRNGKey(0))
    assert carry["core"]["valid"].shape == (2, config.hcam.max_chunks)
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(7, state, {"step": 7})
    assert checkpointer.stored_params() == agent.param_shapes()
    restored, _, _ = checkpointer.restore(agent.init(1))
    checkpointer.close()
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)


def compare_one_and_two_devices():
    """Runs in a subprocess with two CPU devices; prints a JSON report."""
    assert jax.device_count() == 2, jax.devices()
    data = memory_batch(2, 16, 8, image=False)
    key = jax.random.PRNGKey(3)
    results = {}
    for devices in ([0], [0, 1]):
        config = build_config(["debug"], {"jax.train_devices": devices,
                                          "jax.policy_devices": [1]})
        agent = Agent(VECTOR_SPACE, gym.spaces.Discrete(2), config)
        state, metrics = agent.train(agent.init(0), data, key)
        results[len(devices)] = (state, metrics)
    sharded_agent = agent
    (state1, metrics1), (state2, metrics2) = results[1], results[2]
    report = {"params_max_diff": max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                     for a, b in zip(jax.tree.leaves(state1),
                                                     jax.tree.leaves(state2))),
              # Summation order differs across devices: each metric agrees to 1e-4 of itself, or
              # to 1e-6 where it is near 0 (float32 rounding of a sum of values of order 1).
              "metrics_off": {k: [float(metrics1[k]), float(metrics2[k])] for k in metrics1
                              if abs(float(metrics1[k]) - float(metrics2[k])) > 1e-6 + 1e-4 * abs(float(metrics1[k]))},
              "state_devices": len(jax.tree.leaves(state2)[0].sharding.device_set)}
    try:
        sharded_agent.train(state2, memory_batch(3, 16, 8, image=False), key)
    except ValueError as error:
        report["odd_batch_error"] = str(error)
    obs = {k: v[:, 0] for k, v in data.items()}
    action, _ = sharded_agent.policy(state2, sharded_agent.initial_carry(2), obs, key)
    report["policy_device"] = str(list(action.devices())[0])
    print(json.dumps(report))


@pytest.fixture(scope="module", autouse=True)
def two_device_run():
    """The two-device comparison in a subprocess (XLA_FLAGS must be set before jax is
    imported), started before this module's other tests so its compiles overlap theirs."""
    root = Path(__file__).resolve().parents[1]
    # The suite's XLA flags (optimisation level 0) plus two host devices.
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": f"{root}{os.pathsep}{root / 'tests'}"}
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    process = subprocess.Popen(
        [sys.executable, "-c", "import test_agent; test_agent.compare_one_and_two_devices()"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_two_device_train_step_equals_one_device_step(two_device_run):
    stdout, stderr = two_device_run.communicate(timeout=600)
    assert two_device_run.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["state_devices"] == 2
    assert report["params_max_diff"] < 1e-5, report
    assert report["metrics_off"] == {}, report
    assert "divisible" in report.get("odd_batch_error", ""), report
    assert report["policy_device"].endswith("1"), report
