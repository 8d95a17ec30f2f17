"""World model: encoder, stochastic latent, sequence core (S5 stack, GRU or HCAM), heads, losses.

Notation (R2I): embedding e_t, posterior z_t ~ q(z_t | e_t) (mimo) or
q(z_t | h_t, e_t) (gru), core input u_t = SiLU(LN(W [z_{t-1}, a_{t-1}])), deterministic
state h_t (`deter`), prior p(z_t | h_t). At an episode start the core state becomes
its initial state and z_{t-1}, a_{t-1} are zeroed, identically when observing a whole
sequence and when stepping.

Batch-major (B, T, ...) at this module's boundary; time-major inside the core.
Carries (`obs_step`, `observe`): {"core": core state, "stoch": z_{t-1} (B, S, C),
"action": a_{t-1} (B, A)}; core state is a tuple of n_layers complex64 (B, P) for
mimo, (B, deter) float32 for gru. Latent states (`img_step`, imagination starts):
{"core", "stoch", "deter"}.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from recall2imagine import nets
from recall2imagine.config import ConfigError, non_negative, one_of, positive
from recall2imagine.cores import KINDS, build_core
from recall2imagine.cores import OPTIONS as CORE_OPTIONS
from recall2imagine.nets import sg

_OPT = {"lr": positive, "eps": positive, "clip": positive, "wd": non_negative, "warmup": non_negative}
OPTIONS = {
    "rssm.deter": positive, "rssm.units": positive, "rssm.hidden": positive, "rssm.stoch": positive,
    "rssm.classes": positive, "rssm.act": one_of(*nets.ACTIVATIONS), "rssm.norm": one_of(*nets.NORMS),
    "rssm.initial": one_of("learned", "zeros"), "rssm.unimix": non_negative, "rssm.action_clip": positive,
    **{f"loss_scales.{k}": non_negative for k in ("image", "vector", "reward", "cont", "dyn", "rep")},
    "dyn_loss.free": non_negative, "rep_loss.free": non_negative,
    **{f"model_opt.{k}": rule for k, rule in _OPT.items()},
    "ssm_opt.lr": positive, "ssm_opt.wd": non_negative,
}


def check_options(config) -> None:
    if config["rssm.unimix"] >= 1.0:
        raise ConfigError(f"Config key 'rssm.unimix' is {config['rssm.unimix']}; allowed: [0, 1).")


def swap_bt(x):
    """(B, T, ...) <-> (T, B, ...)."""
    return jnp.swapaxes(x, 0, 1)


def flat_steps(tree, index=None):
    """(B, T, ...) leaves -> (B*T, ...) in batch-major order, or their rows ``index`` (N,)."""
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)
    return flat if index is None else jax.tree.map(lambda x: x[index], flat)


def bound_action(action, limit):
    """Scales actions outside [-limit, limit] back onto it, keeping their gradient
    (R2I, DreamerV3); clipping would zero the gradient outside the box."""
    return action * sg(limit / jnp.maximum(limit, jnp.abs(action)))


class WorldModelNet(nn.Module):
    """Holds every world-model parameter; each method is one operation of `WorldModel`."""

    encoder: nn.Module
    core_input: nn.Module
    core: nn.Module
    deter_out: nn.Module | None  # Dense y_t -> h_t; None where h_t is the core state (gru).
    prior: nn.Module
    posterior: nn.Module
    decoder: nn.Module
    reward_head: nn.Module
    cont_head: nn.Module
    parallel: bool  # posterior q(z_t | e_t) without h_t (cores trained in one sequence call)
    traced: bool  # the sequence call returns a trace; states come from core.state_at
    stoch: int
    classes: int
    unimix: float
    action_clip: float
    act: str

    def latent_logits(self, net, x):
        return net(x).astype(jnp.float32).reshape(x.shape[:-1] + (self.stoch, self.classes))

    def sample(self, logits, key):
        return nets.OneHotDist(logits, self.unimix).sample(key)

    def inputs(self, prev_stoch, prev_action, is_first):
        """u_t from z_{t-1} (..., S, C), a_{t-1} (..., A), zeroed where is_first (...)."""
        keep = (~is_first)[..., None].astype(jnp.float32)
        stoch = prev_stoch.reshape(prev_stoch.shape[:-2] + (-1,)) * keep
        action = bound_action(prev_action, self.action_clip) * keep
        return self.core_input(jnp.concatenate([stoch, action], -1))

    def to_deter(self, y):
        if self.deter_out is None:
            return y.astype(jnp.float32)
        return nets.activation(self.act)(self.deter_out(y)).astype(jnp.float32)

    def posterior_logits(self, deter, embed):
        x = embed if self.parallel else jnp.concatenate([deter, embed], -1)
        return self.latent_logits(self.posterior, x)

    def initial_core(self, batch_shape):
        return self.core.initial_state(batch_shape)

    def encode(self, obs):
        return self.encoder(obs)

    def obs_step(self, carry, embed, is_first, key):
        u = self.inputs(carry["stoch"], carry["action"], is_first)
        y, core = self.core.step(u, is_first, carry["core"])
        deter = self.to_deter(y)
        prior_logits = self.latent_logits(self.prior, deter)
        post_logits = self.posterior_logits(deter, embed)
        stoch = self.sample(post_logits, key)
        return {"core": core, "stoch": stoch, "deter": deter,
                "post_logits": post_logits, "prior_logits": prior_logits}

    def observe_parallel(self, carry, embed, action, is_first, key, training):
        """Parallel cores: posterior for all steps at once, then one core sequence call
        (with core dropout when training; needs a "dropout" rng)."""
        post_logits = self.latent_logits(self.posterior, embed)
        keys = jax.random.split(key, embed.shape[1])
        # One key per step, as obs_step uses, so both paths sample the same z.
        stoch = jax.vmap(self.sample, in_axes=(1, 0), out_axes=1)(post_logits, keys)
        prev_stoch = jnp.concatenate([carry["stoch"][:, None], stoch[:, :-1]], 1)
        prev_action = jnp.concatenate([carry["action"][:, None], action[:, :-1]], 1)
        u = self.inputs(prev_stoch, prev_action, is_first)
        y, states = self.core(swap_bt(u), swap_bt(is_first), carry["core"],
                              deterministic=not training)
        deter = self.to_deter(swap_bt(y))
        core = states if self.traced else jax.tree.map(swap_bt, states)
        return {"core": core, "stoch": stoch, "deter": deter,
                "post_logits": post_logits,
                "prior_logits": self.latent_logits(self.prior, deter)}

    def img_step(self, state, action, key):
        no_reset = jnp.zeros(action.shape[:-1], bool)
        u = self.inputs(state["stoch"], action, no_reset)
        if self.traced:  # imagined steps extend the short-range path, never the memory
            y, core = self.core.step(u, no_reset, state["core"], remember=False)
        else:
            y, core = self.core.step(u, no_reset, state["core"])
        deter = self.to_deter(y)
        stoch = self.sample(self.latent_logits(self.prior, deter), key)
        return {"core": core, "stoch": stoch, "deter": deter}

    def core_state_at(self, trace, t, b, freeze=False):
        state = self.core.state_at(trace, t, b)
        return self.core.freeze(state) if freeze else state

    def decode(self, features):
        return self.decoder(features)

    def reward(self, features):
        return self.reward_head(features)

    def cont(self, features):
        return self.cont_head(features)

    def touch_all(self, obs, action, is_first, key, head_inputs, features):
        """Initialisation: runs every submodule once; head_inputs {head: feature names},
        features(state, names) -> (..., F)."""
        embed = self.encode(obs)
        carry = {"core": self.initial_core(is_first.shape), "action": action,
                 "stoch": jnp.zeros(is_first.shape + (self.stoch, self.classes))}
        out = self.obs_step(carry, embed, is_first, key)
        return (self.decode(features(out, head_inputs["decoder"])),
                self.reward(features(out, head_inputs["reward"])).mean(),
                self.cont(features(out, head_inputs["cont"])).mean())


def build_sequence_core(config, dtype):
    """The sequence core (`ssm_type`) at the world model's rssm widths, from its config slice
    (or any config holding `rssm.*` and the cores' options)."""
    r = config.rssm
    return build_core(config.part(CORE_OPTIONS), units=r.units, deter=r.deter, hidden=r.hidden,
                      initial=r.initial, norm=r.norm, dtype=dtype)


def build_net(obs_shapes, config, dtype):
    """WorldModelNet from the world model's config slice; obs_shapes {key: shape}.

    Returns (net, (decoder image keys, decoder vector keys))."""
    r, enc, dec = config.rssm, config.encoder, config.decoder
    enc_cnn, enc_mlp = nets.select_keys(obs_shapes, enc.cnn_keys, enc.mlp_keys)
    dec_cnn, dec_mlp = nets.select_keys(obs_shapes, dec.cnn_keys, dec.mlp_keys)
    kind = KINDS[config.ssm_type]
    core = build_sequence_core(config, dtype)
    deter_out = None if kind.state_is_deter else nn.Dense(r.deter, dtype=dtype, kernel_init=nets.dense_init())
    latent_mlp = lambda: nn.Sequential([
        nets.MLP(1, r.units, r.act, r.norm, dtype=dtype),
        nn.Dense(r.stoch * r.classes, dtype=dtype, kernel_init=nets.dense_init())])
    rh, ch = config.reward_head, config.cont_head
    net = WorldModelNet(
        encoder=nets.Encoder(enc_cnn, enc_mlp, enc.mlp_layers, enc.mlp_units, enc.cnn_depth,
                             enc.minres, enc.symlog_inputs, enc.act, enc.norm, dtype),
        core_input=nets.MLP(1, r.units, r.act, r.norm, dtype=dtype),
        core=core, deter_out=deter_out, prior=latent_mlp(), posterior=latent_mlp(),
        decoder=nets.Decoder(dec_cnn, dec_mlp, dec.mlp_layers, dec.mlp_units, dec.cnn_depth,
                             dec.minres, dec.act, dec.norm, dtype),
        reward_head=nets.Head("twohot", rh.layers, rh.units, bins=rh.bins, bin_limit=rh.bin_limit,
                              outscale=rh.outscale, act=rh.act, norm=rh.norm, dtype=dtype),
        cont_head=nets.Head("binary", ch.layers, ch.units, outscale=ch.outscale,
                            act=ch.act, norm=ch.norm, dtype=dtype),
        parallel=kind.parallel, traced=kind.traced, stoch=r.stoch, classes=r.classes, unimix=r.unimix,
        action_clip=r.action_clip, act=r.act)
    return net, (dec_cnn, dec_mlp)


class WorldModel:
    """Pure functions of world-model params; see the module docstring for carries.

    config: the world model's slice (`config.part(*world_model.SLICE)`); dtype: compute dtype.
    """

    def __init__(self, obs_shapes, act_dim, config, dtype=jnp.float32):
        self.config = config
        self.act_dim = act_dim
        self.kind = KINDS[config.ssm_type]
        self.deter_size = config.rssm.deter
        self.stoch_shape = (config.rssm.stoch, config.rssm.classes)
        self.net, (self.dec_cnn, self.dec_mlp) = build_net(obs_shapes, config, dtype)
        self.obs_keys = tuple(k for k, _ in self.net.encoder.cnn_keys + self.net.encoder.mlp_keys)
        self.obs_shapes = {k: tuple(obs_shapes[k]) for k in self.obs_keys}
        # Observation keys a training batch needs: encoded or reconstructed.
        self.data_keys = tuple(dict.fromkeys(
            self.obs_keys + tuple(k for k, _ in self.dec_cnn + self.dec_mlp)))
        self.head_inputs = {"decoder": self.feature_names(config.decoder.inputs),
                            "reward": self.feature_names(config.reward_head.inputs),
                            "cont": self.feature_names(config.cont_head.inputs)}

    def feature_names(self, names):
        """Resolved feature names: without core hidden features (gru), hidden means deter."""
        if self.kind.hidden is None:
            names = ["deter" if n == "hidden" else n for n in names]
        return tuple(dict.fromkeys(names))

    def features(self, state, names):
        """Concatenated features (..., F) of a latent state for resolved ``names``.

        The state holds deter, stoch and either core or hidden (an imagined trajectory
        stores hidden, the core's flattened features, instead of the core state)."""
        parts = {"deter": lambda: state["deter"],
                 "stoch": lambda: state["stoch"].reshape(state["stoch"].shape[:-2] + (-1,)),
                 "hidden": lambda: (state["hidden"] if "hidden" in state
                                    else self.kind.hidden(state["core"]))}
        return jnp.concatenate([parts[n]() for n in names], -1)

    def init(self, key):
        obs = {k: jnp.zeros((1,) + s, jnp.uint8 if len(s) == 3 else jnp.float32)
               for k, s in self.obs_shapes.items()}
        init_key, sample_key = jax.random.split(key)
        return self.net.init(init_key, obs, jnp.zeros((1, self.act_dim)), jnp.ones((1,), bool),
                             sample_key, self.head_inputs, self.features,
                             method=WorldModelNet.touch_all)

    def initial_carry(self, params, batch_size):
        core = self.net.apply(params, (batch_size,), method=WorldModelNet.initial_core)
        return {"core": core, "stoch": jnp.zeros((batch_size,) + self.stoch_shape),
                "action": jnp.zeros((batch_size, self.act_dim))}

    def initial_latent(self, params, batch_size):
        """A latent state {core, stoch, deter} of zeros and initial core states (for shapes)."""
        carry = self.initial_carry(params, batch_size)
        return {"core": carry["core"], "stoch": carry["stoch"],
                "deter": jnp.zeros((batch_size, self.deter_size))}

    def encode(self, params, obs):
        for k, s in self.obs_shapes.items():
            assert obs[k].shape[obs[k].ndim - len(s):] == s, (
                f"observation {k!r}: expected trailing shape {s}, got {obs[k].shape}")
        return self.net.apply(params, obs, method=WorldModelNet.encode)

    def obs_step(self, params, carry, embed, is_first, key):
        """One step: carry (z_{t-1}, a_{t-1}, core), embed (B, E), is_first (B,).

        Returns (carry with core and stoch of step t and the action left as given,
        out: {core, stoch (B,S,C), deter (B,D), post_logits, prior_logits}).
        """
        out = self.net.apply(params, carry, embed, is_first, key, method=WorldModelNet.obs_step)
        return {"core": out["core"], "stoch": out["stoch"], "action": carry["action"]}, out

    def observe(self, params, carry, embed, action, is_first, key, training=False):
        """A whole sequence: embed (B, T, E), action (B, T, A) = a_t (taken after obs_t),
        is_first (B, T). Returns (carry after the last step, outs with (B, T, ...) leaves).
        ``training`` applies SSM dropout (ssm.dropout)."""
        batch, length = is_first.shape
        expected = (batch, length, self.act_dim)
        assert embed.shape[:2] == (batch, length) and action.shape == expected, (
            f"observe: embed {embed.shape}, action {action.shape}, is_first {is_first.shape}")
        if self.kind.parallel:
            # Dropout draws from its own stream so sampling keys match obs_step's.
            rngs = {"dropout": jax.random.fold_in(key, 1)} if training else {}
            outs = self.net.apply(params, carry, embed, action, is_first, key, training,
                                  method=WorldModelNet.observe_parallel, rngs=rngs)
        else:
            outs = self._observe_stepwise(params, carry, embed, action, is_first, key)
        last_steps = jnp.arange(batch) * length + length - 1
        last = {"core": self.core_states(params, outs["core"], last_steps, length),
                "stoch": outs["stoch"][:, -1], "action": action[:, -1]}
        return last, outs

    def _observe_stepwise(self, params, carry, embed, action, is_first, key):
        def step(carry, inputs):
            embed_t, action_t, first_t, key_t = inputs
            carry, out = self.obs_step(params, carry, embed_t, first_t, key_t)
            return {**carry, "action": action_t}, out

        keys = jax.random.split(key, is_first.shape[1])
        _, outs = jax.lax.scan(step, carry, (swap_bt(embed), swap_bt(action),
                                             swap_bt(is_first), keys))
        return jax.tree.map(swap_bt, outs)

    def core_states(self, params, core, index, length, imagine=False):
        """Core states after the flat (batch-major) steps ``index`` (N,) of a (B, T = length)
        observe pass; core: its outs["core"]; index None: every step, in order. imagine:
        the states start imagination, so a traced core may add what its imagined steps
        reuse (HCAM: the frozen memory's projections)."""
        if self.kind.traced:
            index = jnp.arange(core["reset"].size) if index is None else index
            return self.net.apply(params, core, index % length, index // length, imagine,
                                  method=WorldModelNet.core_state_at)
        return flat_steps(core, index)

    def img_step(self, params, state, action, key):
        """Prior step: state {core, stoch, deter} (N, ...), action (N, A) -> next state."""
        return self.net.apply(params, state, action, key, method=WorldModelNet.img_step)

    def head(self, params, state, name):
        """The "reward" or "cont" head's distribution on a latent state."""
        method = {"reward": WorldModelNet.reward, "cont": WorldModelNet.cont}[name]
        return self.net.apply(params, self.features(state, self.head_inputs[name]), method=method)

    def loss(self, params, data, key):
        """World-model loss on a batch (B, T, ...).

        Returns (total loss, (outs of `observe`, metrics of scalar losses)).
        """
        c = self.config
        is_first = data["is_first"]
        batch = is_first.shape[0]
        embed = self.encode(params, {k: data[k] for k in self.obs_keys})
        carry = self.initial_carry(params, batch)
        if self.kind.traced:
            carry["core"] = None  # the cleared memory: no stored chunks to read
        _, outs = self.observe(params, carry, embed, data["action"], is_first, key, training=True)
        losses = self._prediction_losses(params, outs, data)
        post = nets.OneHotDist(outs["post_logits"], c.rssm.unimix, event_dims=1)
        prior = nets.OneHotDist(outs["prior_logits"], c.rssm.unimix, event_dims=1)
        post_sg = nets.OneHotDist(sg(outs["post_logits"]), c.rssm.unimix, event_dims=1)
        prior_sg = nets.OneHotDist(sg(outs["prior_logits"]), c.rssm.unimix, event_dims=1)
        kl = post_sg.kl(prior)
        losses["dyn"] = jnp.maximum(kl, c.dyn_loss.free)
        losses["rep"] = jnp.maximum(post.kl(prior_sg), c.rep_loss.free)
        scales = {**{k: c.loss_scales.image for k, _ in self.dec_cnn},
                  **{k: c.loss_scales.vector for k, _ in self.dec_mlp},
                  **{k: c.loss_scales[k] for k in ("reward", "cont", "dyn", "rep")}}
        assert set(losses) == set(scales), f"losses {sorted(losses)} vs scales {sorted(scales)}"
        means = {k: v.mean() for k, v in losses.items()}
        total = sum(scales[k] * v for k, v in means.items())
        metrics = {f"loss/{k}": v for k, v in means.items()}
        metrics.update({"loss/model": total, "model/kl": kl.mean(),
                        "model/post_entropy": post.entropy().mean(),
                        "model/prior_entropy": prior.entropy().mean()})
        return total, (outs, metrics)

    def _prediction_losses(self, params, outs, data):
        recon = self.net.apply(params, self.features(outs, self.head_inputs["decoder"]),
                               method=WorldModelNet.decode)
        losses = {}
        for key, shape in self.dec_cnn:
            losses[key] = nets.mse_loss(recon[key], data[key].astype(jnp.float32) / 255.0, 3)
        for key, shape in self.dec_mlp:
            target = data[key].astype(jnp.float32)
            if self.config.decoder.vector_dist == "symlog_mse":
                target = nets.symlog(target)
            losses[key] = nets.mse_loss(recon[key], target, len(shape))
        losses["reward"] = -self.head(params, outs, "reward").log_prob(data["reward"])
        cont = self.head(params, outs, "cont")
        losses["cont"] = -cont.log_prob(1.0 - data["is_terminal"].astype(jnp.float32))
        return losses


# The world model's whole config slice: its own options, its core's, its networks'.
SLICE = (OPTIONS, CORE_OPTIONS, nets.OPTIONS)
