"""The R2I agent: world model + actor-critic, jitted train and policy steps.

State (a pytree of arrays, checkpointable):
  {"params": {"wm", "actor", "critic", "slow_critic"},
   "opt": {"wm", "actor", "critic"},            optax states
   "retnorm": {"low", "high"},                  float32 scalars
   "step": int32 scalar}                        train steps taken
With the exploration bonus, params and opt also hold "expl" (the ensemble); with its own
critic (`expl.critic: separate`) params hold "expl_critic" and "slow_expl_critic", opt
"expl_critic", and the state "expl_retnorm".
Policy carry: {"core": SSM states (tuple of n_layers complex64 (N, P)) or GRU state
(N, deter), "stoch": z_{t-1} (N, S, C), "action": a_{t-1} (N, A)}.

Training is data parallel over a mesh axis "data" of `jax.train_devices`: the batch is
sharded along B, the state replicated; the same jitted function serves 1 or N devices.
"""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from recall2imagine import behavior, explore, world_model
from recall2imagine.behavior import Behavior, imagination_starts, retnorm_init, slow_update
from recall2imagine.checkpoint import tree_shapes
from recall2imagine.explore import Explorer
from recall2imagine.nets import sg
from recall2imagine.optim import make_optimizer
from recall2imagine.world_model import WorldModel

MODES = ("train", "eval")


def env_steps_per_update(config) -> float:
    """Env steps that earn one update at the train ratio (replayed batch_size x batch_length
    steps per update; inf at ratio 0, which trains nothing)."""
    ratio = config.run.train_ratio
    return config.batch_size * config.batch_length / ratio if ratio > 0 else float("inf")


def rows_per_update(config) -> int:
    """Replayed sequences one update trains on: batch_size per world-model update
    (run.model_updates of them, the last with the actor-critic)."""
    return config.batch_size * config.run.model_updates


def _devices(indices, key, local=False):
    """Devices by index: global ones (training may span hosts) or this process's (acting)."""
    devices = jax.local_devices() if local else jax.devices()
    indices = list(indices)
    if not indices or any(not 0 <= i < len(devices) for i in indices):
        raise ValueError(f"{key} must list indices into jax.{'local_' if local else ''}devices() "
                         f"(0..{len(devices) - 1} here: {devices}), got {indices}")
    return [devices[i] for i in indices]


def _to_global(tree, sharding):
    """Host arrays -> arrays with `sharding`; a leaf that already has it passes as it is (a train
    state's hundreds of arrays would otherwise be placed again at every update, milliseconds
    each time). With several processes each one passes its own part of the batch (or, for
    replicated values, the same value)."""
    def place(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(place, tree)


def _local_copy(tree):
    """A replicated array's copy on this process (for the policy device)."""
    return jax.tree.map(lambda x: x if x.is_fully_addressable else x.addressable_data(0), tree)


def _placed(tree, sharding):
    """Whether every leaf of `tree` is already a jax.Array with `sharding`: then placing it
    again would only cost time (milliseconds per call for a train state's hundreds of leaves)."""
    return all(isinstance(x, jax.Array) and x.sharding == sharding for x in jax.tree.leaves(tree))


class Agent:
    """Agent(obs_space: gymnasium.spaces.Dict, act_space: Discrete | Box (1-D), config)."""

    def __init__(self, obs_space, act_space, config):
        self.config = config
        self.obs_space = obs_space
        self.act_space = act_space
        if isinstance(act_space, gymnasium.spaces.Discrete):
            self.discrete, act_dim = True, int(act_space.n)
        elif isinstance(act_space, gymnasium.spaces.Box) and len(act_space.shape) == 1:
            self.discrete, act_dim = False, int(act_space.shape[0])
        else:
            raise ValueError(f"action space must be Discrete or a 1-D Box, got {act_space}")
        self.act_dim = act_dim
        shapes = {k: tuple(v.shape) for k, v in obs_space.spaces.items()}
        dtype = jnp.dtype(config.jax.precision)
        # Each part gets its own slice of the config.
        self.wm = WorldModel(shapes, act_dim, config.part(*world_model.SLICE), dtype)
        self.explorer = (Explorer(self.wm, act_dim, config.part(explore.OPTIONS), env_steps_per_update(config))
                         if config.expl.scale > 0 else None)
        self.behavior = Behavior(self.wm, self.discrete, act_dim, config.part(behavior.OPTIONS), dtype,
                                 self.explorer)
        self.opts = {"wm": make_optimizer(config.model_opt, config.ssm_opt),
                     "actor": make_optimizer(config.actor_opt),
                     "critic": make_optimizer(config.critic_opt)}
        if self.explorer is not None:
            self.opts["expl"] = make_optimizer(config.expl_opt)
        # The bonus's own critic (expl.critic: separate) learns as the task critic does.
        self.expl_critic = self.explorer is not None and self.explorer.separate
        if self.expl_critic:
            self.opts["expl_critic"] = make_optimizer(config.critic_opt)
        self.batch_keys = self.wm.data_keys + ("action", "reward", "is_first", "is_terminal")

        self.train_devices = _devices(config.jax.train_devices, "jax.train_devices")
        self.policy_device = _devices(config.jax.policy_devices[:1], "jax.policy_devices",
                                      local=True)[0]
        mesh = Mesh(np.array(self.train_devices), ("data",))
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._sharded = NamedSharding(mesh, PartitionSpec("data"))
        # Jitted: initialising op by op would compile every small op separately.
        self._init = jax.jit(self._fresh_state, out_shardings=self._replicated)
        # Two programs: with the ensemble (while the bonus is paid) and without it.
        self._train = jax.jit(self._train_step, static_argnames="explore", out_shardings=self._replicated)
        self._policy = jax.jit(self._policy_step, static_argnames="greedy")
        self._abstract_wm = jax.eval_shape(self.wm.init, jax.random.PRNGKey(0))
        # One process training on the policy device alone: the train state's params can act as they are.
        self._policy_on_train_device = jax.process_count() == 1 and self.train_devices == [self.policy_device]

    # ------------------------------------------------------------------ state

    def init(self, seed):
        """Fresh state (see the module docstring), replicated over the train devices."""
        return self._init(jax.random.PRNGKey(seed))

    def _fresh_state(self, key):
        wm_key, behavior_key = jax.random.split(key)
        wm_params = self.wm.init(wm_key)
        heads = self.behavior.init(behavior_key, wm_params)
        params = {"wm": wm_params, "actor": heads["actor"], "critic": heads["critic"],
                  "slow_critic": jax.tree.map(jnp.copy, heads["critic"])}
        if self.explorer is not None:
            params["expl"] = self.explorer.init(jax.random.fold_in(key, 1), wm_params)
        if self.expl_critic:
            critic = self.behavior.init(jax.random.fold_in(key, 2), wm_params)["critic"]
            params["expl_critic"] = critic
            params["slow_expl_critic"] = jax.tree.map(jnp.copy, critic)
        state = {"params": params,
                 "opt": {k: self.opts[k].init(params[k]) for k in self.opts},
                 "retnorm": retnorm_init(), "step": jnp.zeros((), jnp.int32)}
        if self.expl_critic:
            state["expl_retnorm"] = retnorm_init()
        return state

    def param_shapes(self) -> dict:
        """{"params/wm/...": (shape, dtype name)} of a fresh state, computed without allocating it."""
        abstract = jax.eval_shape(self._fresh_state, jax.random.PRNGKey(0))
        return tree_shapes(abstract["params"], "params")

    def initial_carry(self, batch_size):
        """Zero carry for ``batch_size`` envs on the policy device.

        Its values are placeholders: an env's first observation has is_first=True,
        which resets the entry to the learned initial state inside `policy`.
        """
        shapes = jax.eval_shape(lambda p: self.wm.initial_carry(p, batch_size), self._abstract_wm)
        carry = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return jax.device_put(carry, self.policy_device)

    # ----------------------------------------------------------------- acting

    def policy(self, state, carry, obs, key, mode="train"):
        """One env step for N envs: obs dict with (N, ...) arrays and is_first (N,).

        Returns (action (N, A) float32: one-hot for Discrete, in [-1, 1] for Box;
        new carry). mode "train" samples, "eval" takes the actor's mode.
        """
        if mode not in MODES:
            raise ValueError(f"policy mode must be one of {MODES}, got {mode!r}")
        params = {"wm": state["params"]["wm"], "actor": state["params"]["actor"]}
        inputs = {k: obs[k] for k in self.wm.obs_keys}
        inputs["is_first"] = np.asarray(obs["is_first"], bool)
        if not (self._policy_on_train_device and _placed(params, self._replicated)):
            params = jax.device_put(_local_copy(params), self.policy_device)
        carry, inputs, key = jax.device_put((carry, inputs, key), self.policy_device)
        return self._policy(params, carry, inputs, key, greedy=mode == "eval")

    def _policy_step(self, params, carry, obs, key, greedy):
        obs_key, act_key = jax.random.split(key)
        embed = self.wm.encode(params["wm"], {k: obs[k] for k in self.wm.obs_keys})
        carry, latent = self.wm.obs_step(params["wm"], carry, embed, obs["is_first"], obs_key)
        action = self.behavior.act(params["actor"], latent, act_key, greedy)
        return action, {**carry, "action": action}

    def env_action(self, action):
        """(N, A) policy actions -> env actions: (N,) int (Discrete) or (N, D) in bounds (Box)."""
        action = np.asarray(action)
        if self.discrete:
            return action.argmax(-1).astype(np.int64) + int(self.act_space.start)
        low, high = self._box_bounds()
        return np.clip(low + (np.clip(action, -1.0, 1.0) + 1.0) / 2.0 * (high - low), low, high)

    def replay_action(self, env_actions):
        """Env actions (N,) int or (N, D) -> stored format (N, A) float32."""
        env_actions = np.asarray(env_actions)
        if self.discrete:
            index = env_actions.astype(np.int64) - int(self.act_space.start)
            return np.eye(self.act_dim, dtype=np.float32)[index]
        low, high = self._box_bounds()
        return np.clip(2.0 * (env_actions - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def _box_bounds(self):
        """Finite Box bounds, else [-1, 1] per dimension (actions then pass unchanged)."""
        low = np.asarray(self.act_space.low, np.float64)
        high = np.asarray(self.act_space.high, np.float64)
        finite = np.isfinite(low) & np.isfinite(high)
        return np.where(finite, low, -1.0), np.where(finite, high, 1.0)

    # --------------------------------------------------------------- training

    def train(self, state, batch, key):
        """One world-model + actor-critic update on a (B, T, ...) batch (with run.model_updates
        K > 1: K world-model updates, the first K - 1 alone, each on B / K of the rows).

        Returns (new state, metrics: dict of float32 scalars, one per loss term
        "loss/<obs key>", "loss/reward", "loss/cont", "loss/dyn", "loss/rep",
        "loss/model", "loss/actor", "loss/critic", plus grad norms and statistics).
        """
        return self._train(*self._train_arguments(state, batch, key), explore=self.exploring(state))

    def exploring(self, state) -> bool:
        """Whether the update from `state` trains the exploration ensemble and pays its bonus.

        Once `expl.until` has passed nothing reads the ensemble (the bonus is 0 in imagined
        and replayed returns alike), so the step leaves it out: the ensemble, its optimizer
        state and the bonus critic pass through unchanged and the update costs what it costs
        without exploration. Reads the update count from the device only with `expl.until`
        set (the loop has fetched that state's metrics by then)."""
        if self.explorer is None:
            return False
        until = self.explorer.until_updates
        return until == 0 or int(_local_copy(jnp.asarray(state["step"]))) < until

    def lower_train(self, state, batch, key):
        """The train step lowered for the shapes of (state, batch, key), without running it:
        `.compile()` compiles it ahead of time (and fills JAX's persistent compilation cache,
        where one is set, for a later `train` on the same shapes) without touching the device's
        memory beyond the arguments."""
        return self._train.lower(*self._train_arguments(state, batch, key), explore=self.exploring(state))

    def _train_arguments(self, state, batch, key):
        """(state, batch, key) checked and placed as the jitted train step takes them."""
        missing = [k for k in self.batch_keys if k not in batch]
        if missing:
            raise KeyError(f"batch lacks keys {missing}; it needs {list(self.batch_keys)}")
        # With several processes each passes its own part of the global batch.
        size = np.shape(batch["is_first"])[0] * jax.process_count()
        devices = len(self.train_devices)
        if size % devices:
            raise ValueError(f"batch_size {size} must be divisible by the number of train "
                             f"devices {devices} (jax.train_devices)")
        batch = _to_global({k: batch[k] for k in self.batch_keys}, self._sharded)
        state, key = _to_global((state, key), self._replicated)
        return state, batch, key

    def _wm_step(self, params, opt_wm, wm_params, batch, key, step, metrics, expl_params=None):
        """One world-model update on `batch`: (new wm params, opt state, posterior outputs,
        replay value targets (None without repval), loss metrics). expl_params: the
        ensemble while its bonus is paid (it joins the replayed returns), else None."""
        repval = self.config.loss_scales.repval

        def wm_objective(wm_params):
            loss, (outs, wm_metrics) = self.wm.loss(wm_params, batch, key)
            targets = None
            if repval > 0:
                # The critic's loss on the replayed states reaches the world model: whatever
                # the returns depend on (a key taken 40 steps ago) must be in the state.
                targets = self.behavior.replay_targets(params["critic"], outs, batch, expl_params, step)
                fit = self.behavior.replay_value_loss(params["critic"], outs, targets)
                loss = loss + repval * fit
                wm_metrics = {**wm_metrics, "loss/repval": fit,
                              "repval/return": (targets[0] * targets[1]).sum()
                              / jnp.maximum(targets[1].sum(), 1.0)}
            return loss, (outs, targets, wm_metrics)

        (_, (outs, targets, wm_metrics)), grads = jax.value_and_grad(
            wm_objective, has_aux=True)(wm_params)
        wm_params, opt_wm = self._apply("wm", grads, wm_params, opt_wm, metrics)
        return wm_params, opt_wm, outs, targets, wm_metrics

    def _model_only_steps(self, params, opt_wm, batch, key, step, expl_params):
        """run.model_updates > 1: the batch's rows are model_updates groups of equal size
        (row b * K + k is group k's row b: each device's rows hold whole groups); groups 0 to
        K - 2 each train the world model alone, in turn. Returns (wm params, opt state, the
        last group's batch, their mean model loss or None)."""
        groups = self.config.run.model_updates
        if groups == 1:
            return params["wm"], opt_wm, batch, None
        rows = batch["is_first"].shape[0]
        assert rows % groups == 0, (
            f"with run.model_updates {groups} a batch needs a multiple of {groups} rows, got {rows}")
        grouped = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(rows // groups, groups, *x.shape[1:]), 0, 1),
                               batch)

        def model_step(carry, inputs):
            wm_params, opt_state = carry
            part, part_key = inputs
            wm_params, opt_state, _, _, wm_metrics = self._wm_step(
                params, opt_state, wm_params, part, part_key, step, {}, expl_params)
            return (wm_params, opt_state), wm_metrics["loss/model"]

        extra = jax.tree.map(lambda x: x[:-1], grouped)
        keys = jax.random.split(key, groups - 1)
        (wm_params, opt_wm), losses = jax.lax.scan(model_step, (params["wm"], opt_wm), (extra, keys))
        return wm_params, opt_wm, jax.tree.map(lambda x: x[-1], grouped), losses.mean()

    def _train_step(self, state, batch, key, explore=False):
        """explore (static): train the ensemble and pay its bonus (see `exploring`)."""
        params, opt = state["params"], state["opt"]
        expl_params = params["expl"] if explore else None
        batch = self._checked(batch)
        wm_key, actor_key, start_key = jax.random.split(key, 3)
        extra_key = jax.random.fold_in(wm_key, 1)
        metrics = {}

        # run.model_updates - 1 world-model updates alone, then one with the actor-critic.
        wm_params, opt_wm, batch, extra_loss = self._model_only_steps(
            params, opt["wm"], batch, extra_key, state["step"], expl_params)
        if extra_loss is not None:
            metrics["loss/model_only"] = extra_loss
        wm_params, opt_wm, outs, replay_targets, wm_metrics = self._wm_step(
            params, opt_wm, wm_params, batch, wm_key, state["step"], metrics, expl_params)
        metrics.update(wm_metrics)

        length = batch["is_first"].shape[1]
        core_at = lambda core, index: self.wm.core_states(wm_params, core, index, length, imagine=True)
        start = sg(imagination_starts(outs, batch["is_terminal"], self.config.imag_starts, start_key,
                                      core_at))
        if explore:
            (_, expl_metrics), grads = jax.value_and_grad(self.explorer.loss, has_aux=True)(
                params["expl"], outs, batch["action"], batch["is_first"], batch["reward"])
            expl_params, opt_expl = self._apply("expl", grads, params["expl"], opt["expl"], metrics)
            metrics.update(expl_metrics)

        expl_critic = ((params["expl_critic"], state["expl_retnorm"]) if self.expl_critic and explore
                       else None)
        (_, (traj, returns, retnorm, actor_metrics, expl)), grads = jax.value_and_grad(
            self.behavior.actor_loss, has_aux=True)(
            params["actor"], wm_params, params["critic"], state["retnorm"], start, actor_key,
            expl_params, state["step"], expl_critic)
        actor_params, opt_actor = self._apply("actor", grads, params["actor"], opt["actor"],
                                              metrics)
        metrics.update(actor_metrics)

        due = state["step"] % self.config.slow_critic_update == 0
        critic_params, slow, opt_critic, critic_metrics = self._critic_step(
            "critic", params, opt, traj, returns, due, metrics,
            None if replay_targets is None else (outs, replay_targets))
        metrics.update(critic_metrics)

        new_state = {"params": {"wm": wm_params, "actor": actor_params, "critic": critic_params,
                                "slow_critic": slow},
                     "opt": {"wm": opt_wm, "actor": opt_actor, "critic": opt_critic},
                     "retnorm": retnorm, "step": state["step"] + 1}
        if self.explorer is not None:
            new_state["params"]["expl"] = expl_params if explore else params["expl"]
            new_state["opt"]["expl"] = opt_expl if explore else opt["expl"]
        if self.expl_critic and not explore:
            for name in ("expl_critic", "slow_expl_critic"):
                new_state["params"][name] = params[name]
            new_state["opt"]["expl_critic"] = opt["expl_critic"]
            new_state["expl_retnorm"] = state["expl_retnorm"]
        elif self.expl_critic:
            # The bonus's critic: the same loss on the bonus's returns, its own slow copy.
            expl_returns, new_state["expl_retnorm"] = expl
            (new_state["params"]["expl_critic"], new_state["params"]["slow_expl_critic"],
             new_state["opt"]["expl_critic"], expl_critic_metrics) = self._critic_step(
                "expl_critic", params, opt, traj, expl_returns, due, metrics)
            metrics.update({f"expl_critic/{k.split('/')[-1]}": v
                            for k, v in expl_critic_metrics.items()})
        return new_state, {k: v.astype(jnp.float32) for k, v in metrics.items()}

    def _critic_step(self, name, params, opt, traj, returns, due, metrics, replay=None):
        """Critic `name`'s update on `returns` (and `replay`), then its slow copy
        "slow_<name>"'s EMA step where `due`: (critic params, slow params, opt state, loss metrics)."""
        slow_name = f"slow_{name}"
        (_, loss_metrics), grads = jax.value_and_grad(self.behavior.critic_loss, has_aux=True)(
            params[name], params[slow_name], traj, returns, replay)
        critic, opt_state = self._apply(name, grads, params[name], opt[name], metrics)
        slow = slow_update(params[slow_name], critic, self.config.slow_critic_fraction, due)
        return critic, slow, opt_state, loss_metrics

    def _apply(self, name, grads, params, opt_state, metrics):
        metrics[f"grad_norm/{name}"] = optax.tree.norm(grads)
        updates, opt_state = self.opts[name].update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def _checked(self, batch):
        batch_size, length = batch["is_first"].shape
        assert batch["action"].shape == (batch_size, length, self.act_dim), (
            f"batch action must be (B, T, {self.act_dim}), got {batch['action'].shape}")
        for key in ("reward", "is_terminal"):
            assert batch[key].shape == (batch_size, length), (
                f"batch {key} must be (B, T) = {(batch_size, length)}, got {batch[key].shape}")
        return {**batch, "action": batch["action"].astype(jnp.float32),
                "is_first": batch["is_first"].astype(bool)}
