"""Actor-critic trained in imagination (DreamerV3 recipe, R2I feature inputs).

Imagination starts from every posterior state of a batch (N = B*T starts; `imag_starts`
< 1 draws a random fraction of them) and rolls
the world model's prior forward `imag_horizon` steps with the actor. Trajectories are
time-major: every leaf has leading shape (H+1, N), step 0 being the start.
"""

import jax
import jax.numpy as jnp

from recall2imagine import nets
from recall2imagine.config import between, non_negative, one_of, positive, subset_of
from recall2imagine.nets import sg
from recall2imagine.world_model import flat_steps

ACTOR_GRADS = ("reinforce", "backprop")
ACTENT_KINDS = ("entropy", "uniform")
_HEAD = {"layers": non_negative, "units": positive, "act": one_of(*nets.ACTIVATIONS),
         "norm": one_of(*nets.NORMS), "outscale": non_negative, "inputs": subset_of(*nets.FEATURES)}
_OPT = {"lr": positive, "eps": positive, "clip": positive, "wd": non_negative, "warmup": non_negative}
OPTIONS = {
    **{f"actor.{k}": rule for k, rule in _HEAD.items()},
    "actor.minstd": positive, "actor.maxstd": positive, "actor.unimix": between(0.0, 1.0, high_open=True),
    **{f"critic.{k}": rule for k, rule in _HEAD.items()},
    "critic.bins": positive, "critic.bin_limit": positive,
    **{f"actor_opt.{k}": rule for k, rule in _OPT.items()},
    **{f"critic_opt.{k}": rule for k, rule in _OPT.items()},
    "actor_grad_disc": one_of(*ACTOR_GRADS), "actor_grad_cont": one_of(*ACTOR_GRADS),
    "imag_horizon": positive,
    # A fraction of the batch's B*T posterior states.
    "imag_starts": between(0.0, 1.0, low_open=True),
    "horizon": positive, "return_lambda": between(0.0, 1.0),
    "slow_critic_update": positive, "slow_critic_fraction": between(0.0, 1.0),
    "retnorm.decay": between(0.0, 1.0), "retnorm.max": positive,
    "retnorm.perclo": between(0.0, 100.0), "retnorm.perchi": between(0.0, 100.0),
    "actent": non_negative,
    # What actent scales: "entropy" of the policy (DreamerV3), or "uniform", the policy's
    # cross-entropy from the uniform one, subtracted: the same pull near uniform, but its
    # gradient does not vanish where an action's probability has fallen near zero, so an
    # action the actor ruled out early can come back once the world model says it pays.
    "actent_kind": one_of(*ACTENT_KINDS),
    **{f"loss_scales.{k}": non_negative for k in ("actor", "critic", "slowreg")},
    # The critic also fits lambda-returns of the replayed sequences, and that loss reaches
    # the world model through the replayed states (0, as in R2I: off).
    "loss_scales.repval": non_negative,
}


def imagination_starts(outs, is_terminal, fraction=1.0, key=None, core_at=flat_steps):
    """Posterior states of a (B, T) batch as imagination starts.

    fraction 1.0 (R2I and DreamerV3): every state, N = B*T, in batch order.
    fraction < 1: N = max(1, round(fraction * B*T)) states drawn without replacement
    with ``key``; imagination cost falls in proportion (it dominates a CPU update).
    core_at(outs["core"], index (N,) or None) gives the core states after those flat
    steps (`WorldModel.core_states`; by default (B, T, ...) leaves are gathered).
    """
    total = is_terminal.size
    index = None
    if fraction < 1.0:
        count = max(1, int(round(fraction * total)))
        index = jax.random.permutation(key, total)[:count]
    rows = lambda x: flat_steps(x, index)
    return {"core": core_at(outs["core"], index), "stoch": rows(outs["stoch"]),
            "deter": rows(outs["deter"]), "is_terminal": rows(is_terminal)}


def lambda_return(reward, value, cont, discount, lam):
    """TD(lambda) returns R_0..R_{H-1}, shape (H, N).

    reward, cont: (H, N), r_t and c_t of steps 1..H; value: (H+1, N), v_0..v_H.
    R_t = r_{t+1} + discount c_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H.
    """
    assert reward.shape == cont.shape == value[1:].shape, (
        f"lambda_return: reward {reward.shape}, cont {cont.shape}, value {value.shape}")
    disc = discount * cont
    bootstrap = reward + disc * (1.0 - lam) * value[1:]

    def step(later, inputs):
        boot_t, disc_t = inputs
        ret = boot_t + disc_t * lam * later
        return ret, ret

    _, returns = jax.lax.scan(step, value[-1], (bootstrap, disc), reverse=True)
    return returns


def replay_return(reward, value, is_terminal, is_first, discount, lam):
    """TD(lambda) returns of replayed (B, T) sequences and where they are targets.

    reward[b, t] is the reward of the transition into step t (the batch's layout), value
    (B, T) the critic's values of the replayed states. Within an episode
    R_t = r_{t+1} + discount c_{t+1} ((1 - lam) v_{t+1} + lam R_{t+1}), with
    c_{t+1} = 1 - is_terminal[t+1]; R_t = v_t where step t+1 starts another episode and at
    the last step, since the batch holds no successor. Returns (returns (B, T), mask (B, T)):
    mask is 1 where the successor is in the batch and the same episode and step t is not
    terminal, so the loss never fits a return to itself or across an episode start.
    """
    assert reward.shape == value.shape == is_terminal.shape == is_first.shape, (
        f"replay_return: reward {reward.shape}, value {value.shape}, is_terminal "
        f"{is_terminal.shape}, is_first {is_first.shape}")
    to_time = lambda x: jnp.swapaxes(jnp.asarray(x, jnp.float32), 0, 1)
    reward, value, terminal, first = map(to_time, (reward, value, is_terminal, is_first))
    # `lambda_return` with the recursion cut before an episode start: no continuation there
    # and the state's own value as its "reward" gives R_t = v_t.
    cut = first[1:] > 0
    returns = lambda_return(jnp.where(cut, value[:-1], reward[1:]), value,
                            jnp.where(cut, 0.0, 1.0 - terminal[1:]), discount, lam)
    returns = jnp.concatenate([returns, value[-1:]], 0)
    mask = jnp.concatenate([(1.0 - first[1:]) * (1.0 - terminal[:-1]),
                            jnp.zeros_like(terminal[:1])], 0)
    return jnp.swapaxes(returns, 0, 1), jnp.swapaxes(mask, 0, 1)


def retnorm_init():
    return {"low": jnp.zeros((), jnp.float32), "high": jnp.zeros((), jnp.float32)}


def retnorm_update(state, returns, decay, perclo, perchi):
    """EMA of the perclo-th and perchi-th percentiles (in percent) of all returns."""
    low = jnp.percentile(returns, perclo)
    high = jnp.percentile(returns, perchi)
    return {"low": decay * state["low"] + (1.0 - decay) * low,
            "high": decay * state["high"] + (1.0 - decay) * high}


def retnorm_stats(state, max_scale):
    """(offset, scale): normalised x = (x - offset) / scale, scale = max(1/max, high - low)."""
    return state["low"], jnp.maximum(1.0 / max_scale, state["high"] - state["low"])


class Behavior:
    """Actor and critic heads and their losses; pure functions of params."""

    def __init__(self, world_model, discrete, act_dim, config, dtype=jnp.float32, explorer=None):
        """config: this module's OPTIONS slice; dtype: compute dtype of the heads."""
        self.wm = world_model
        self.explorer = explorer
        self.config = config
        self.discrete = discrete
        self.act_dim = act_dim
        a, c = config.actor, config.critic
        self.actor = nets.Head("onehot" if discrete else "normal", a.layers, a.units,
                               size=act_dim, outscale=a.outscale, unimix=a.unimix,
                               minstd=a.minstd, maxstd=a.maxstd, act=a.act, norm=a.norm,
                               dtype=dtype)
        self.critic = nets.Head("twohot", c.layers, c.units, bins=c.bins, bin_limit=c.bin_limit,
                                outscale=c.outscale, act=c.act, norm=c.norm, dtype=dtype)
        self.actor_inputs = world_model.feature_names(a.inputs)
        self.critic_inputs = world_model.feature_names(c.inputs)
        self.needed_features = set(self.actor_inputs + self.critic_inputs
                                   + world_model.head_inputs["reward"]
                                   + world_model.head_inputs["cont"]
                                   + (explorer.inputs if explorer is not None else ()))
        self.grad = config.actor_grad_disc if discrete else config.actor_grad_cont
        if config.actent_kind == "uniform" and not discrete:
            raise ValueError("actent_kind 'uniform' needs discrete actions; this task's actions are "
                             "continuous: use actent_kind 'entropy'")
        self.discount = 1.0 - 1.0 / config.horizon

    def init(self, key, wm_params):
        """{"actor": params, "critic": params} for a world model's feature widths."""
        state = self.wm.initial_latent(wm_params, 1)
        actor_key, critic_key = jax.random.split(key)
        return {"actor": self.actor.init(actor_key, self.wm.features(state, self.actor_inputs)),
                "critic": self.critic.init(critic_key, self.wm.features(state, self.critic_inputs))}

    def policy(self, actor_params, state):
        """Action distribution on a latent state (gradients stop at the state)."""
        return self.actor.apply(actor_params, sg(self.wm.features(state, self.actor_inputs)))

    def act(self, actor_params, state, key, greedy):
        """(N, A) float32 actions: one-hot (Discrete) or clipped to [-1, 1] (Box)."""
        dist = self.policy(actor_params, state)
        action = sg(dist.mode() if greedy else dist.sample(key))
        if self.discrete:
            # Exact one-hot: the straight-through sample carries rounding noise.
            return jax.nn.one_hot(jnp.argmax(action, -1), self.act_dim)
        return jnp.clip(action, -1.0, 1.0)

    def value(self, critic_params, state):
        return self.critic.apply(critic_params, self.wm.features(state, self.critic_inputs))

    def imagine(self, wm_params, actor_params, start, key):
        """Rolls the prior and the actor from ``start`` for imag_horizon steps.

        start: {"core", "stoch" (N,S,C), "deter" (N,D), "is_terminal" (N,)}.
        Returns traj with (H+1, N, ...) leaves: deter, stoch, hidden (mimo, when an
        input needs it), action (H+1, N, A), reward, cont, weight (H+1, N).
        """
        horizon = self.config.imag_horizon
        keys = jax.random.split(key, horizon + 1)
        latent = {k: start[k] for k in ("core", "stoch", "deter")}

        def record(state, action):
            out = {"deter": state["deter"], "stoch": state["stoch"], "action": action}
            if "hidden" in self.needed_features:
                out["hidden"] = self.wm.kind.hidden(state["core"])
            return out

        def step(carry, key):
            state, action = carry
            img_key, act_key = jax.random.split(key)
            state = self.wm.img_step(wm_params, state, action, img_key)
            action = self.act_differentiable(actor_params, state, act_key)
            return (state, action), record(state, action)

        first_action = self.act_differentiable(actor_params, latent, keys[0])
        _, traj = jax.lax.scan(step, (latent, first_action), keys[1:])
        first = record(latent, first_action)
        traj = jax.tree.map(lambda x, y: jnp.concatenate([x[None], y], 0), first, traj)
        traj["reward"] = self.wm.head(wm_params, traj, "reward").mean()
        cont = self.wm.head(wm_params, traj, "cont").mode()
        first_cont = 1.0 - start["is_terminal"].astype(jnp.float32)
        traj["cont"] = jnp.concatenate([first_cont[None], cont[1:]], 0)
        # Weight of step t: discount^t times the probability the episode is still running.
        traj["weight"] = jnp.cumprod(self.discount * traj["cont"], 0) / self.discount
        return traj

    def act_differentiable(self, actor_params, state, key):
        """A sampled action that keeps its gradient to the actor (backprop actor)."""
        return self.policy(actor_params, state).sample(key)

    def actor_loss(self, actor_params, wm_params, critic_params, retnorm, start, key, expl_params=None,
                   step=None, expl_critic=None):
        """Imagines and scores with lambda-returns (plus the explorer's bonus when there is one
        and expl_params are given; `step`, the update count, tells it whether `expl.until`
        has passed).

        expl_critic: (params, retnorm state) of the bonus's own critic (`expl.critic:
        separate`); the bonus then has returns and an advantage of its own, added to the task
        advantage at `expl.weight`, and stays out of the task returns.

        Returns (loss, (traj, returns (H, N), updated retnorm state, metrics, expl)), where
        expl is None or the bonus's (returns (H, N), updated retnorm state)."""
        c = self.config
        # REINFORCE needs no gradient through the rollout: keep it out of the graph.
        rollout_params = actor_params if self.grad == "backprop" else sg(actor_params)
        traj = self.imagine(wm_params, rollout_params, start, key)
        cont = traj["cont"][1:]
        value = self.value(critic_params, traj).mean()
        reward = traj["reward"][1:]
        extra, expl = {}, None
        paid = self.explorer is not None and expl_params is not None
        separate = paid and self.explorer.separate
        if separate and expl_critic is None:
            raise ValueError("expl.critic is 'separate': actor_loss needs expl_critic, the bonus "
                             "critic's (params, retnorm state)")
        if paid:
            bonus = self.explorer.bonus(sg(expl_params), traj, step)
            if not separate:
                reward = reward + bonus
            extra = {"expl/bonus": bonus.mean(), "expl/bonus_max": bonus.max()}
        returns = lambda_return(reward, value, cont, self.discount, c.return_lambda)
        retnorm, advantage, scale = self._advantage(retnorm, returns, value)
        if separate:
            expl_value = self.value(expl_critic[0], traj).mean()
            expl_returns = lambda_return(bonus, expl_value, cont, self.discount, c.return_lambda)
            expl_retnorm, expl_advantage, expl_scale = self._advantage(expl_critic[1], expl_returns,
                                                                       expl_value)
            advantage = advantage + self.explorer.paid(step, self.explorer.weight) * expl_advantage
            expl = (sg(expl_returns), expl_retnorm)
            extra.update({"expl/return": expl_returns.mean(), "expl/value": expl_value.mean(),
                          "expl/advantage": expl_advantage.mean(), "expl/retnorm_scale": expl_scale})
        dist = self.policy(actor_params, sg(traj))
        logpi = dist.log_prob(sg(traj["action"]))[:-1]
        entropy = dist.entropy()[:-1]
        loss = -advantage if self.grad == "backprop" else -logpi * sg(advantage)
        if c.actent_kind == "uniform":
            spread = dist.uniform_cross_entropy()[:-1]
            loss = loss + c.actent * spread
            extra["actor/uniform_ce"] = spread.mean()
        else:
            loss = loss - c.actent * entropy
        loss = (loss * sg(traj["weight"][:-1])).mean() * c.loss_scales.actor
        metrics = {"loss/actor": loss, "actor/entropy": entropy.mean(),
                   "actor/logprob": logpi.mean(), "imag/return": returns.mean(),
                   "imag/reward": traj["reward"][1:].mean(), "imag/value": value.mean(),
                   "imag/cont": traj["cont"].mean(), "imag/advantage": advantage.mean(),
                   "retnorm/low": retnorm["low"], "retnorm/high": retnorm["high"],
                   "retnorm/scale": scale, **extra}
        return loss, (sg(traj), sg(returns), retnorm, metrics, expl)

    def _advantage(self, retnorm, returns, value):
        """(updated retnorm state, advantage (H, N) of `returns` over `value` in the returns'
        normalised scale, that scale)."""
        c = self.config
        retnorm = retnorm_update(retnorm, sg(returns), c.retnorm.decay, c.retnorm.perclo,
                                 c.retnorm.perchi)
        offset, scale = retnorm_stats(retnorm, c.retnorm.max)
        return retnorm, (returns - offset) / scale - (value[:-1] - offset) / scale, scale

    def replay_targets(self, critic_params, outs, batch, expl_params=None, step=None):
        """(returns, mask) of `replay_return` for a batch's posterior states ``outs``.

        With an explorer whose bonus shares the task critic (`expl.critic: shared`) the bonus
        joins the replayed rewards, as it joins the imagined ones: the critic learns one value
        of the same states from both."""
        outs = sg(outs)
        value = sg(self.value(critic_params, outs).mean())
        reward = batch["reward"]
        if self.explorer is not None and expl_params is not None and not self.explorer.separate:
            bonus = self.explorer.replayed_bonus(sg(expl_params), outs, batch["action"], step)  # t -> t+1
            reward = reward + jnp.pad(bonus, ((0, 0), (1, 0)))
        return replay_return(reward, value, batch["is_terminal"], batch["is_first"],
                             self.discount, self.config.return_lambda)

    def replay_value_loss(self, critic_params, outs, targets):
        """Mean two-hot loss of the critic on replayed states at the masked replay returns.

        Gradients reach whatever ``outs`` depends on: the world model when the agent passes
        its posterior states unstopped."""
        returns, mask = targets
        fit = -self.value(critic_params, outs).log_prob(sg(returns))
        return (fit * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    def critic_loss(self, critic_params, slow_params, traj, returns, replay=None):
        """Two-hot critic on lambda-returns, regularised towards the slow critic's mean.

        replay: (posterior states, (returns, mask)) of the batch adds
        loss_scales.repval times `replay_value_loss` (the states' gradients stopped)."""
        c = self.config
        states = jax.tree.map(lambda x: x[:-1], traj)
        dist = self.value(critic_params, states)
        slow_mean = sg(self.value(slow_params, states).mean())
        fit = -dist.log_prob(sg(returns))
        reg = -dist.log_prob(slow_mean)
        weight = sg(traj["weight"][:-1])
        loss = ((fit + c.loss_scales.slowreg * reg) * weight).mean() * c.loss_scales.critic
        metrics = {"critic/fit": (fit * weight).mean(), "critic/slowreg": (reg * weight).mean()}
        if replay is not None:
            outs, targets = replay
            repval = self.replay_value_loss(critic_params, sg(outs), targets)
            loss = loss + c.loss_scales.repval * repval
            metrics["critic/replay_fit"] = repval
        return loss, {"loss/critic": loss, **metrics}


def slow_update(slow, fast, fraction, due):
    """EMA step slow <- (1 - fraction) slow + fraction fast where ``due`` (bool scalar)."""
    mix = jnp.where(due, fraction, 0.0)
    return jax.tree.map(lambda s, f: (1.0 - mix) * s + mix * f, slow, fast)
