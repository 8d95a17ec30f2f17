"""Exploration bonus from ensemble disagreement (Plan2Explore, as DreamerV3's `Explore`).

An ensemble of `expl.heads` small MLPs predicts, from a latent state (the features
`expl.inputs`, [deter, stoch] by default) and the action taken there, what follows one step
later. The heads learn from the replayed transitions (never across an episode start).
Where the agent has been, they agree; on a transition it has rarely or never taken
(the turn at a T-Maze junction that a walking policy skips) they disagree. The
variance of their predictions, times `expl.scale`, is added to the imagined reward of
that transition, so the actor is drawn to try it in the real environment; once the
heads have seen it, the bonus fades.

`expl.target` says what the heads predict:
- `latent` (the default, DreamerV3's): the world model's posterior class probabilities of
  the next step. The bonus pays for unseen observations, and fades once they are seen,
  even where the observation is random (each head learns its mean): a T-Maze cue, once
  seen a few hundred times, pays nothing more, whatever it is worth later.
- `reward`: the symlog reward of the next step. The bonus pays where the reward is not
  yet known, and fades only once it is: with the memory among the inputs (`hidden`), a
  turn made while remembering a cue stays uncertain, and pays, until enough such turns
  have been replayed to learn what the cue is worth.

`expl.scale: 0` (the default, as in R2I) builds nothing and leaves the agent as it was.
`expl.until: N` pays the bonus for the first N env steps only (counted as the updates the
train ratio gives them; 0, the default: always). From then on returns and the critic hold
task reward alone, and nothing reads the ensemble, so the train step leaves it out: it
stops learning and costs nothing (`Agent.exploring`).

`expl.critic` says where the bonus goes. `shared` (the default) adds it to the task reward:
one critic, one return normaliser. `separate` (DreamerV3's split of extrinsic and
exploration critics) gives the bonus a critic and a return normaliser of its own. The actor's
advantage is then the task advantage plus `expl.weight` times the bonus advantage, each
normalised by its own returns. The task critic never sees the bonus, so its values stay
right when the bonus fades or stops, and the bonus cannot widen the task returns' scale.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recall2imagine import nets
from recall2imagine.config import non_negative, one_of, positive, subset_of
from recall2imagine.nets import sg, symlog

TARGETS = ("latent", "reward")
OPTIONS = {
    "expl.scale": non_negative,  # 0 turns exploration off
    "expl.until": non_negative,  # env steps with the bonus; 0: the whole run
    "expl.critic": one_of("shared", "separate"),  # the bonus's own critic or the task's
    "expl.weight": non_negative,  # the bonus advantage's weight (expl.critic: separate)
    "expl.target": one_of(*TARGETS),  # what the heads predict one step later
    "expl.inputs": subset_of(*nets.FEATURES),  # the latent features the heads read
    "expl.heads": positive, "expl.layers": positive, "expl.units": positive,
    "expl.act": one_of(*nets.ACTIVATIONS), "expl.norm": one_of(*nets.NORMS),
    "expl_opt.lr": positive, "expl_opt.eps": positive, "expl_opt.clip": positive,
    "expl_opt.wd": non_negative, "expl_opt.warmup": non_negative,
}


class _Predictor(nn.Module):
    layers: int
    units: int
    size: int
    act: str
    norm: str

    @nn.compact
    def __call__(self, x):
        x = nets.MLP(self.layers, self.units, self.act, self.norm)(x)
        return nn.Dense(self.size, kernel_init=nets.dense_init())(x)


class Ensemble(nn.Module):
    """`heads` independently initialised predictors: (..., F) -> (heads, ..., size)."""

    heads: int
    layers: int
    units: int
    size: int
    act: str = "silu"
    norm: str = "layer"

    @nn.compact
    def __call__(self, x):
        stack = nn.vmap(_Predictor, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=None, out_axes=0, axis_size=self.heads)
        return stack(self.layers, self.units, self.size, self.act, self.norm)(x)


class Explorer:
    """The disagreement ensemble of a world model; pure functions of its params."""

    def __init__(self, world_model, act_dim, config, env_steps_per_update: float = 1.0):
        """config: this module's OPTIONS slice; env_steps_per_update: the train ratio's
        (batch size x length / ratio), which turns `expl.until` into updates."""
        e = config.expl
        self.wm = world_model
        self.scale = e.scale
        # The bonus is paid while the update count (the agent state's "step") is below this.
        self.until_updates = int(math.ceil(e.until / env_steps_per_update)) if e.until > 0 else 0
        self.separate = e.critic == "separate"
        self.weight = e.weight
        self.target = e.target
        self.inputs = world_model.feature_names(e.inputs)
        self.size = 1 if e.target == "reward" else world_model.stoch_shape[0] * world_model.stoch_shape[1]
        self.net = Ensemble(e.heads, e.layers, e.units, self.size, e.act, e.norm)
        self.act_dim = act_dim

    def _x(self, state, action):
        return jnp.concatenate([self.wm.features(state, self.inputs), action.astype(jnp.float32)], -1)

    def _replayed_x(self, outs, action):
        """Inputs of the replayed transitions t -> t+1, (B, T-1, F), from the batch-major
        posterior pass (a core state is (B, T, ...), as hidden features need) and a_t."""
        return self._x(outs, action)[:, :-1]

    def init(self, key, wm_params):
        state = self.wm.initial_latent(wm_params, 1)
        return self.net.init(key, self._x(state, jnp.zeros((1, self.act_dim))))

    def loss(self, params, outs, action, is_first, reward=None):
        """Mean squared error of every head on the batch's transitions t -> t+1.

        outs: the world model's posterior pass (B, T, ...); action: a_t (B, T, A);
        is_first: (B, T); a transition into an episode start is left out; reward: r_t
        (B, T), the reward on arriving at step t (needed by `expl.target: reward`).
        """
        if self.target == "reward":
            if reward is None:
                raise ValueError("expl.target is 'reward': the ensemble's loss needs the batch's rewards")
            target = symlog(reward[:, 1:].astype(jnp.float32))[..., None]
        else:
            target = jax.nn.softmax(outs["post_logits"][:, 1:].astype(jnp.float32), -1)
            target = target.reshape(target.shape[:2] + (-1,))
        pred = self.net.apply(params, sg(self._replayed_x(outs, action)))
        target = sg(target)
        error = ((pred - target[None]) ** 2).mean(-1)  # (heads, B, T-1)
        mask = 1.0 - is_first[:, 1:].astype(jnp.float32)
        loss = (error * mask[None]).sum() / (error.shape[0] * jnp.maximum(mask.sum(), 1.0))
        return loss, {"loss/expl": loss}

    def bonus(self, params, traj, step=None):
        """Intrinsic reward of each imagined transition, (H, N) for steps 1..H.

        traj: (H+1, N, ...) with the features `expl.inputs` names (deter, stoch, hidden) and
        the action taken at each step; step: the update count, against `expl.until` (None:
        the bonus is paid).
        """
        state = {k: traj[k][:-1] for k in self.inputs}
        return self._disagreement(params, self._x(state, traj["action"][:-1]), step)

    def replayed_bonus(self, params, outs, action, step=None):
        """Intrinsic reward of each replayed transition t -> t+1, (B, T-1).

        outs: the world model's posterior pass (B, T, ...); action: a_t (B, T, A)."""
        return self._disagreement(params, self._replayed_x(outs, action), step)

    def _disagreement(self, params, x, step):
        return self.paid(step, self.scale) * self.net.apply(params, x).var(0).mean(-1)

    def paid(self, step, value):
        """`value` while the bonus is paid at update `step` (None: paid), else 0."""
        if self.until_updates and step is not None:
            return jnp.where(step < self.until_updates, value, 0.0)
        return value
