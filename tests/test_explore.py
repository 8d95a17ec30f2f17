"""Exploration bonus: the ensemble learns seen transitions, disagrees on unseen ones, and trains in the agent."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recall2imagine.agent import Agent
from recall2imagine.config import ConfigError, build_config, validate
from recall2imagine.run import check_params

SPACE = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32)})
ACTIONS = gym.spaces.Discrete(3)


@pytest.fixture(scope="module")
def agent():
    # debug: batch 2 x 16 at train ratio 32, one env step per update, so the bonus is paid
    # in updates 0 and 1 only.
    return Agent(SPACE, ACTIONS, build_config(["debug"], {"expl.scale": 1.0, "expl.until": 2}))


def transitions(batch=4, length=12, seed=0):
    """Posterior-like outputs whose classes step +1 (mod 4) each time step; the action is always 0."""
    rng = np.random.default_rng(seed)
    cls = (rng.integers(0, 4, (batch, 1, 4)) + np.arange(length)[None, :, None]) % 4
    stoch = np.eye(4, dtype=np.float32)[cls]
    outs = {"deter": jnp.asarray(rng.normal(size=(batch, length, 32)).astype(np.float32)),
            "stoch": jnp.asarray(stoch), "post_logits": jnp.asarray(10.0 * stoch - 5.0)}
    action = np.zeros((batch, length, 3), np.float32)
    action[..., 0] = 1.0
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    return outs, jnp.asarray(action), jnp.asarray(is_first)


def test_the_bonus_is_high_on_untaken_actions_once_the_ensemble_has_learned(agent):
    explorer = agent.explorer
    params = agent.init(0)["params"]["expl"]
    outs, action, is_first = transitions()
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def update(params, opt_state):
        (loss, _), grads = jax.value_and_grad(explorer.loss, has_aux=True)(params, outs, action, is_first)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for _ in range(300):
        params, opt_state, loss = update(params, opt_state)
        first = loss if first is None else first
    assert float(loss) < 0.2 * float(first)

    traj = {"deter": jnp.swapaxes(outs["deter"], 0, 1), "stoch": jnp.swapaxes(outs["stoch"], 0, 1)}
    taken = explorer.bonus(params, {**traj, "action": jnp.swapaxes(action, 0, 1)})
    other = jnp.zeros_like(action).at[..., 2].set(1.0)
    untaken = explorer.bonus(params, {**traj, "action": jnp.swapaxes(other, 0, 1)})
    assert taken.shape == (11, 4)
    assert float(untaken.mean()) > 5 * float(taken.mean())


def test_transitions_into_an_episode_start_do_not_train_the_ensemble(agent):
    explorer = agent.explorer
    params = agent.init(0)["params"]["expl"]
    outs, action, is_first = transitions()
    # Garbage targets at steps marked as episode starts must not change the loss.
    starts = is_first.at[:, 5].set(True)
    noisy = {**outs, "post_logits": outs["post_logits"].at[:, 5].set(30.0 * jnp.arange(4.0))}
    clean_loss = explorer.loss(params, outs, action, starts)[0]
    noisy_loss = explorer.loss(params, noisy, action, starts)[0]
    np.testing.assert_allclose(clean_loss, noisy_loss, rtol=1e-6)
    assert float(explorer.loss(params, noisy, action, is_first)[0]) != pytest.approx(float(clean_loss))


def test_agent_with_exploration_trains_its_ensemble_and_reports_the_bonus(agent):
    rng = np.random.default_rng(0)
    data = {"vector": rng.uniform(-1, 1, (2, 16, 3)).astype(np.float32),
            "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 16))],
            "reward": rng.normal(size=(2, 16)).astype(np.float32),
            "is_first": np.zeros((2, 16), bool), "is_terminal": np.zeros((2, 16), bool)}
    data["is_first"][:, 0] = True
    state = agent.init(0)
    before = state["params"]["expl"]
    for i in range(2):
        state, metrics = agent.train(state, data, jax.random.PRNGKey(i))
    assert {"loss/expl", "expl/bonus", "expl/bonus_max", "grad_norm/expl"} <= set(metrics)
    assert all(np.isfinite(float(metrics[k])) for k in ("loss/expl", "expl/bonus"))
    assert float(metrics["expl/bonus"]) > 0
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), before, state["params"]["expl"])
    assert max(jax.tree.leaves(moved)) > 0
    # expl.until (2 env steps = 2 updates here) has passed: the bonus is 0, nothing reads the
    # ensemble, and the step leaves it out. The step with the ensemble, at the same update,
    # would still train it but computes the same update for the rest.
    assert agent.exploring(agent.init(0)) and not agent.exploring(state)
    key = jax.random.PRNGKey(2)
    kept, kept_metrics = agent._train(*agent._train_arguments(state, data, key), explore=True)
    assert float(kept_metrics["expl/bonus"]) == 0.0 and float(kept_metrics["expl/bonus_max"]) == 0.0
    after, metrics = agent.train(state, data, key)
    assert not {"loss/expl", "expl/bonus", "grad_norm/expl"} & set(metrics)
    for part in ("params", "opt"):
        jax.tree.map(np.testing.assert_array_equal, after[part]["expl"], state[part]["expl"])
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), kept["params"]["expl"], state["params"]["expl"])
    assert max(jax.tree.leaves(moved)) > 0
    rest = lambda s: {k: v for k, v in s["params"].items() if k != "expl"}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), rest(after), rest(kept))
    for name, value in metrics.items():
        np.testing.assert_allclose(value, kept_metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_expl_until_counts_env_steps_by_the_train_ratio_and_stops_the_bonus_there(agent):
    config = lambda until, ratio: build_config(["debug"], {"expl.scale": 1.0, "expl.until": until,
                                                           "run.train_ratio": ratio})
    # 2 x 16 replayed steps per update: 10 env steps at ratio 8 earn 2.5 updates, so 3 pay.
    assert Agent(SPACE, ACTIONS, config(10, 8.0)).explorer.until_updates == 3
    assert Agent(SPACE, ACTIONS, config(0, 8.0)).explorer.until_updates == 0
    params = agent.init(0)["params"]["expl"]
    outs, action, _ = transitions(batch=2, length=5)
    traj = {"deter": jnp.swapaxes(outs["deter"], 0, 1), "stoch": jnp.swapaxes(outs["stoch"], 0, 1),
            "action": jnp.swapaxes(action, 0, 1)}
    paid = np.asarray(agent.explorer.bonus(params, traj))
    assert paid.min() > 0
    np.testing.assert_array_equal(agent.explorer.bonus(params, traj, jnp.int32(1)), paid)
    assert not np.asarray(agent.explorer.bonus(params, traj, jnp.int32(2))).any()


def test_replayed_returns_include_the_bonus_of_each_replayed_transition(agent):
    """The critic fits imagined returns with the bonus; its replay targets carry it too."""
    from recall2imagine.behavior import replay_return

    params = agent.init(0)["params"]
    outs, action, is_first = transitions(batch=2, length=6)
    start = agent.wm.initial_latent(params["wm"], 1)
    hidden = agent.wm.features(start, ["hidden"]).shape[-1]  # what the critic reads besides stoch
    outs = {**outs, "deter": outs["deter"][..., :start["deter"].shape[-1]],
            "hidden": jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, hidden)), jnp.float32)}
    batch = {"reward": jnp.asarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 6)),
             "is_terminal": jnp.zeros((2, 6), bool), "is_first": is_first, "action": action}
    plain = agent.behavior.replay_targets(params["critic"], outs, batch)
    with_bonus = agent.behavior.replay_targets(params["critic"], outs, batch, params["expl"])
    # After expl.until (update 2 on): the replayed returns are the task's alone.
    np.testing.assert_array_equal(agent.behavior.replay_targets(params["critic"], outs, batch, params["expl"],
                                                                jnp.int32(2))[0], plain[0])
    steps = {"deter": jnp.swapaxes(outs["deter"], 0, 1), "stoch": jnp.swapaxes(outs["stoch"], 0, 1),
             "action": jnp.swapaxes(action, 0, 1)}
    bonus = np.asarray(agent.explorer.bonus(params["expl"], steps)).T  # (B, T-1): into t = 1..T-1
    assert bonus.min() > 0
    value = agent.behavior.value(params["critic"], outs).mean()
    expected = replay_return(batch["reward"].at[:, 1:].add(bonus), value, batch["is_terminal"], is_first,
                             agent.behavior.discount, agent.config.return_lambda)[0]
    np.testing.assert_allclose(with_bonus[0], expected, rtol=1e-5)
    assert float(jnp.abs(with_bonus[0] - plain[0]).max()) > 0
    np.testing.assert_array_equal(with_bonus[1], plain[1])


def test_without_a_scale_there_is_no_ensemble():
    agent = Agent(SPACE, ACTIONS, build_config(["debug"]))
    assert agent.explorer is None and "expl" not in agent.opts


def resume(saved_overrides, overrides, logdir):
    """Resumes a run saved with `saved_overrides` under `overrides`, as run.train checks it."""
    saved, now = build_config(["debug"], saved_overrides), build_config(["debug"], overrides)
    shapes = lambda config: Agent(SPACE, ACTIONS, config).param_shapes()
    check_params(shapes(saved), shapes(now), logdir, saved, now, shapes)


def test_turning_exploration_on_in_an_existing_logdir_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)params/expl/.*expl\.scale: saved 0\.0, now 1\.0"):
        resume({}, {"expl.scale": 1.0}, tmp_path)
    resume({}, {"expl.units": 8}, tmp_path)  # off: its widths build nothing


def test_changing_the_ensemble_of_a_run_that_explores_is_refused(tmp_path):
    resume({"expl.scale": 1.0}, {"expl.scale": 3.0}, tmp_path)  # only the weight of the bonus
    with pytest.raises(ConfigError, match=r"(?s)params/expl/.*expl\.units: saved 16, now 8") as error:
        resume({"expl.scale": 1.0}, {"expl.scale": 1.0, "expl.units": 8}, tmp_path)
    assert "expl.scale" not in str(error.value)


@pytest.fixture(scope="module")
def separate():
    """The bonus's own critic (bonus paid in updates 0 and 1), on the next reward read from
    the memory (hidden) too: the module's `agent` covers the latent target on a shared critic,
    this one the other choice of each (one compiled train step less)."""
    return Agent(SPACE, ACTIONS, build_config(["debug"], {"expl.scale": 1.0, "expl.until": 2,
                                                          "expl.critic": "separate", "expl.target": "reward",
                                                          "expl.inputs": ["deter", "stoch", "hidden"]}))


def replayed(seed=0):
    rng = np.random.default_rng(seed)
    data = {"vector": rng.uniform(-1, 1, (2, 16, 3)).astype(np.float32),
            "action": np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 16))],
            "reward": rng.normal(size=(2, 16)).astype(np.float32),
            "is_first": np.zeros((2, 16), bool), "is_terminal": np.zeros((2, 16), bool)}
    data["is_first"][:, 0] = True
    return data


def test_a_separate_bonus_critic_learns_the_bonus_returns_and_stays_out_of_the_task_returns(separate):
    from recall2imagine.behavior import Behavior, imagination_starts, lambda_return

    state = separate.init(0)
    params = state["params"]
    assert {"expl_critic", "slow_expl_critic"} <= set(params) and "expl_retnorm" in state
    data = replayed()
    # Jitted: op by op, the world model's loss alone took 6 s of this test.
    outs = jax.jit(lambda wm, batch: separate.wm.loss(wm, batch, jax.random.PRNGKey(0))[1][0])(
        params["wm"], separate._checked(jax.tree.map(jnp.asarray, data)))
    starts = imagination_starts(outs, jnp.asarray(data["is_terminal"]))
    behavior = separate.behavior
    expl_critic = (params["expl_critic"], state["expl_retnorm"])
    loss = jax.jit(lambda actor, step: behavior.actor_loss(
        actor, params["wm"], params["critic"], state["retnorm"], starts, jax.random.PRNGKey(1),
        params["expl"], step, expl_critic))
    value, (traj, returns, _, _, (expl_returns, _)) = loss(params["actor"], jnp.int32(0))
    # The task returns hold the world model's reward alone; the bonus has returns of its own.
    discount, lam = behavior.discount, separate.config.return_lambda
    task_value = behavior.value(params["critic"], traj).mean()
    np.testing.assert_allclose(returns, lambda_return(traj["reward"][1:], task_value, traj["cont"][1:],
                                                      discount, lam), rtol=1e-5, atol=1e-6)
    bonus = separate.explorer.bonus(params["expl"], traj)
    assert float(bonus.min()) > 0
    expl_value = behavior.value(params["expl_critic"], traj).mean()
    np.testing.assert_allclose(expl_returns, lambda_return(bonus, expl_value, traj["cont"][1:], discount, lam),
                               rtol=1e-5, atol=1e-6)
    # The bonus's advantage moves the actor's loss while it is paid, and not after expl.until.
    alone = Behavior(separate.wm, True, 3, behavior.config)  # the same heads, no explorer
    plain, _ = jax.jit(lambda actor: alone.actor_loss(
        actor, params["wm"], params["critic"], state["retnorm"], starts, jax.random.PRNGKey(1)))(params["actor"])
    assert abs(float(value) - float(plain)) > 1e-6
    after, _ = loss(params["actor"], jnp.int32(2))
    np.testing.assert_allclose(float(after), float(plain), rtol=1e-6)
    # The replayed returns of the task critic do not carry the bonus either.
    batch = {"reward": jnp.asarray(data["reward"]), "is_terminal": jnp.asarray(data["is_terminal"]),
             "is_first": jnp.asarray(data["is_first"]), "action": jnp.asarray(data["action"])}
    targets = jax.jit(lambda expl: behavior.replay_targets(params["critic"], outs, batch, expl)[0])
    np.testing.assert_array_equal(targets(params["expl"]), targets(None))

    before = {name: params[name] for name in ("expl_critic", "expl")}
    state, metrics = separate.train(state, data, jax.random.PRNGKey(0))
    assert {"expl/return", "expl/advantage", "expl/retnorm_scale", "expl_critic/fit",
            "grad_norm/expl_critic", "loss/expl"} <= set(metrics)
    assert float(metrics["expl/return"]) > 0 and np.isfinite(float(metrics["loss/expl"]))
    for name in before:  # the bonus critic and the reward ensemble both learn
        moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), before[name], state["params"][name])
        assert max(jax.tree.leaves(moved)) > 0, name
    assert float(state["expl_retnorm"]["high"]) > 0

    # Past expl.until the bonus critic, its slow copy and its return scale pass through.
    state["step"] = jnp.int32(2)
    after, metrics = separate.train(state, data, jax.random.PRNGKey(1))
    assert not any(k.startswith(("expl/", "expl_critic/")) for k in metrics)
    for name in ("expl_critic", "slow_expl_critic"):
        jax.tree.map(np.testing.assert_array_equal, after["params"][name], state["params"][name])
    jax.tree.map(np.testing.assert_array_equal, after["expl_retnorm"], state["expl_retnorm"])
    assert after["step"] == 3


def test_switching_the_bonus_to_its_own_critic_in_an_existing_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)params/expl_critic/.*expl\.critic: saved 'shared', now 'separate'"):
        resume({"expl.scale": 1.0}, {"expl.scale": 1.0, "expl.critic": "separate"}, tmp_path)
    resume({"expl.scale": 1.0, "expl.critic": "separate"},
           {"expl.scale": 1.0, "expl.critic": "separate", "expl.weight": 0.1}, tmp_path)


def widths(agent):
    """(deter, hidden) feature widths and the stoch shape of an agent's world model."""
    start = agent.wm.initial_latent(agent.init(0)["params"]["wm"], 1)
    return start["deter"].shape[-1], agent.wm.features(start, ["hidden"]).shape[-1], agent.wm.stoch_shape


def coin_flips(agent, batch=16, length=8, seed=0):
    """The same latent states in every sequence (class t mod C at step t, action 0), and a
    reward that is a fair coin flip at every step: what follows is random, never unseen."""
    rng = np.random.default_rng(seed)
    deter_width, hidden_width, (groups, classes) = widths(agent)
    cls = np.broadcast_to(np.arange(length)[None, :, None] % classes, (batch, length, groups))
    stoch = np.eye(classes, dtype=np.float32)[cls]
    same = lambda width: jnp.asarray(np.broadcast_to(rng.normal(size=(1, length, width)).astype(np.float32),
                                                     (batch, length, width)))
    outs = {"deter": same(deter_width), "stoch": jnp.asarray(stoch), "hidden": same(hidden_width)}
    action = np.zeros((batch, length, 3), np.float32)
    action[..., 0] = 1.0
    is_first = np.zeros((batch, length), bool)
    is_first[:, 0] = True
    reward = rng.integers(0, 2, (batch, length)).astype(np.float32)
    return outs, jnp.asarray(action), jnp.asarray(is_first), jnp.asarray(reward)


def test_the_reward_bonus_fades_on_random_rewards_it_has_seen_and_stays_on_untaken_actions(separate):
    explorer = separate.explorer
    assert explorer.inputs == ("deter", "stoch", "hidden") and explorer.size == 1
    assert "hidden" in separate.behavior.needed_features  # imagined trajectories keep it
    outs, action, is_first, reward = coin_flips(separate)
    params = separate.init(0)["params"]["expl"]
    opt = optax.adam(3e-3)
    opt_state = opt.init(params)

    @jax.jit
    def update(params, opt_state):
        (loss, _), grads = jax.value_and_grad(explorer.loss, has_aux=True)(params, outs, action, is_first,
                                                                            reward)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    traj = {k: jnp.swapaxes(outs[k], 0, 1) for k in ("deter", "stoch", "hidden")}
    other = jnp.zeros_like(action).at[..., 2].set(1.0)
    # Without a step, as imagination before expl.until: the bonus is paid.
    bonus = lambda params, act: float(explorer.bonus(params, {**traj, "action": jnp.swapaxes(act, 0, 1)}).mean())
    before = bonus(params, action)
    for _ in range(400):
        params, opt_state = update(params, opt_state)
    # Every head learns the coin's mean: the latent target's kind of fading, on a random outcome.
    taken, untaken = bonus(params, action), bonus(params, other)
    assert taken < 0.05 * before
    assert untaken > 10 * taken
    # The replayed bonus is the same disagreement on the batch-major posterior states.
    replayed = explorer.replayed_bonus(params, outs, action)
    assert replayed.shape == (16, 7)
    np.testing.assert_allclose(replayed, np.asarray(explorer.bonus(params, {**traj, "action": jnp.swapaxes(action, 0, 1)})).T,
                               rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="expl.target is 'reward'.*rewards"):
        explorer.loss(params, outs, action, is_first)


def test_the_reward_ensemble_learns_from_the_batch_rewards(separate):
    params = separate.init(0)["params"]["expl"]
    data = replayed()
    outs = coin_flips(separate, batch=2, length=16)[0]
    loss = lambda r: float(separate.explorer.loss(params, outs, jnp.asarray(data["action"]),
                                                  jnp.asarray(data["is_first"]), jnp.asarray(r))[0])
    assert loss(data["reward"]) != pytest.approx(loss(data["reward"] + 1.0))
    # Only the rewards of steps 1..T-1 are targets (r_t arrives with the step t -> t+1's end).
    assert loss(data["reward"]) == pytest.approx(loss(np.concatenate([data["reward"][:, :1] + 5.0,
                                                                      data["reward"][:, 1:]], 1)))


def test_switching_the_bonus_target_or_its_inputs_in_a_run_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"(?s)params/expl/.*expl\.target: saved 'latent', now 'reward'"):
        resume({"expl.scale": 1.0}, {"expl.scale": 1.0, "expl.target": "reward"}, tmp_path)
    with pytest.raises(ConfigError, match=r"(?s)params/expl/.*expl\.inputs"):
        resume({"expl.scale": 1.0}, {"expl.scale": 1.0, "expl.inputs": ["deter", "stoch", "hidden"]}, tmp_path)
    with pytest.raises(ConfigError, match="expl.target.*'value'.*latent.*reward"):
        validate(build_config(["debug"], {"expl.target": "value"}))
