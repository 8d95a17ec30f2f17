"""Networks and output distributions of the agent (Flax linen).

Distributions are small pure-array classes used inside jitted functions; every
log-probability, entropy and KL is computed in float32 whatever the compute dtype.
"""

import itertools
import math
import re
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from recall2imagine.config import ANY, non_negative, one_of, positive, subset_of

sg = jax.lax.stop_gradient

ACTIVATIONS = {"silu": nn.silu, "elu": nn.elu, "relu": nn.relu, "gelu": nn.gelu,
               "tanh": jnp.tanh, "none": lambda x: x}
NORMS = ("layer", "none")
# Latent-state features a head can read (world_model.features).
FEATURES = ("deter", "stoch", "hidden")
IMAGE_DISTS = ("mse",)
VECTOR_DISTS = ("symlog_mse", "mse")


def _mlp_options(section, layers="layers", units="units"):
    return {f"{section}.{layers}": non_negative, f"{section}.{units}": positive,
            f"{section}.act": one_of(*ACTIVATIONS), f"{section}.norm": one_of(*NORMS)}


def _coder_options(section):
    return {f"{section}.mlp_keys": ANY, f"{section}.cnn_keys": ANY,
            **_mlp_options(section, "mlp_layers", "mlp_units"),
            f"{section}.cnn_depth": positive, f"{section}.minres": positive}


OPTIONS = {
    **_coder_options("encoder"), "encoder.symlog_inputs": ANY,
    **_coder_options("decoder"), "decoder.image_dist": one_of(*IMAGE_DISTS),
    "decoder.vector_dist": one_of(*VECTOR_DISTS), "decoder.inputs": subset_of(*FEATURES),
    **_mlp_options("reward_head"), "reward_head.bins": positive, "reward_head.bin_limit": positive,
    "reward_head.outscale": non_negative, "reward_head.inputs": subset_of(*FEATURES),
    **_mlp_options("cont_head"), "cont_head.outscale": non_negative,
    "cont_head.inputs": subset_of(*FEATURES),
}


def symlog(x):
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def dense_init(scale=1.0):
    """Truncated-normal fan-average init (DreamerV3); scale 0 gives zeros."""
    if scale == 0.0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale, "fan_avg", "truncated_normal")


def activation(name):
    return ACTIVATIONS[name]


class Norm(nn.Module):
    """LayerNorm (eps 1e-3, as DreamerV3) or identity."""

    kind: str = "layer"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.kind == "none":
            return x
        return nn.LayerNorm(epsilon=1e-3, dtype=self.dtype)(x)


# ----------------------------------------------------------------- distributions


class OneHotDist:
    """Categorical over the last axis with unimix and straight-through samples.

    logits (..., K); ``event_dims`` extra axes before K are summed in log_prob,
    entropy and kl (1 for the stochastic latent (..., S, K)).
    """

    def __init__(self, logits, unimix=0.0, event_dims=0):
        logits = logits.astype(jnp.float32)
        # The network's own distribution, before unimix (`uniform_cross_entropy`).
        self.raw_logits = jax.nn.log_softmax(logits, -1)
        if unimix:
            probs = jax.nn.softmax(logits, -1)
            probs = (1.0 - unimix) * probs + unimix / logits.shape[-1]
            logits = jnp.log(probs)
        self.logits = jax.nn.log_softmax(logits, -1)
        self.event_dims = event_dims

    @property
    def probs(self):
        return jnp.exp(self.logits)

    def _sum(self, x):
        return x.sum(tuple(range(-self.event_dims, 0))) if self.event_dims else x

    def _straight_through(self, onehot):
        probs = self.probs
        return onehot + probs - sg(probs)

    def sample(self, key):
        index = jax.random.categorical(key, self.logits, -1)
        return self._straight_through(jax.nn.one_hot(index, self.logits.shape[-1]))

    def mode(self):
        index = jnp.argmax(self.logits, -1)
        return self._straight_through(jax.nn.one_hot(index, self.logits.shape[-1]))

    def log_prob(self, x):
        return self._sum((x * self.logits).sum(-1))

    def entropy(self):
        return self._sum(-(self.probs * self.logits).sum(-1))

    def uniform_cross_entropy(self):
        """-mean_k log p_k of the distribution before unimix: log K at uniform, large when a
        class is nearly ruled out. Its gradient in the logits is p - 1/K, which stays large
        where the entropy's, -p (log p + H), vanishes (p_k near 0)."""
        return self._sum(-self.raw_logits.mean(-1))

    def kl(self, other):
        return self._sum((self.probs * (self.logits - other.logits)).sum(-1))


# DreamerV3's symlog range for twohot bins; heads take their own (config `bin_limit`).
BIN_LIMIT = 20.0


def twohot_bins(n, limit=BIN_LIMIT):
    """n bin centres in symlog space, evenly spaced over [-limit, limit].

    DreamerV3's 255 bins over [-20, 20] are 0.157 apart, so a reward of +-0.02 gets only
    11% of its weight off the zero bin and its sign is worth 0.08 nats of loss; a task with
    small, bounded rewards learns them faster with a smaller limit.
    """
    return jnp.linspace(-limit, limit, n)


def twohot_encode(x, bins):
    """Two-hot weights (..., K) of scalars x (...) over sorted bins (K,)."""
    n = bins.shape[0]
    below = jnp.clip((bins <= x[..., None]).sum(-1) - 1, 0, n - 1)
    above = jnp.clip(n - (bins > x[..., None]).sum(-1), 0, n - 1)
    same = below == above
    to_below = jnp.where(same, 1.0, jnp.abs(bins[below] - x))
    to_above = jnp.where(same, 1.0, jnp.abs(bins[above] - x))
    total = to_below + to_above
    return (jax.nn.one_hot(below, n) * (to_above / total)[..., None]
            + jax.nn.one_hot(above, n) * (to_below / total)[..., None])


class TwoHotDist:
    """Scalar distribution: softmax over symlog-spaced bins, logits (..., K)."""

    def __init__(self, logits, limit=BIN_LIMIT):
        self.logits = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
        self.bins = twohot_bins(logits.shape[-1], limit)

    def mean(self):
        return symexp((jnp.exp(self.logits) * self.bins).sum(-1))

    def log_prob(self, x):
        target = twohot_encode(symlog(x.astype(jnp.float32)), self.bins)
        return (target * self.logits).sum(-1)


class BernoulliDist:
    """Binary distribution from logits (...)."""

    def __init__(self, logits):
        self.logits = logits.astype(jnp.float32)

    def mean(self):
        return jax.nn.sigmoid(self.logits)

    def mode(self):
        return (self.logits > 0).astype(jnp.float32)

    def log_prob(self, x):
        x = x.astype(jnp.float32)
        return x * jax.nn.log_sigmoid(self.logits) + (1 - x) * jax.nn.log_sigmoid(-self.logits)


class NormalDist:
    """Diagonal normal over the last axis (continuous actions); mean, std (..., D)."""

    def __init__(self, mean, std):
        self.loc = mean.astype(jnp.float32)
        self.std = std.astype(jnp.float32)

    def sample(self, key):
        return self.loc + self.std * jax.random.normal(key, self.loc.shape)

    def mode(self):
        return self.loc

    def log_prob(self, x):
        z = (x - self.loc) / self.std
        return (-0.5 * z ** 2 - jnp.log(self.std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self):
        return (0.5 * math.log(2 * math.pi * math.e) + jnp.log(self.std)).sum(-1)


def mse_loss(pred, target, ndims):
    """Squared error summed over the last ``ndims`` axes (image: 3, vector: 1)."""
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return (diff ** 2).sum(tuple(range(-ndims, 0)))


# ---------------------------------------------------------------------- networks


class MLP(nn.Module):
    """``layers`` x (Dense -> norm -> act) over the last axis: (..., F) -> (..., units)."""

    layers: int
    units: int
    act: str = "silu"
    norm: str = "layer"
    symlog_inputs: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = x.astype(jnp.float32)
        x = symlog(x) if self.symlog_inputs else x
        x = x.astype(self.dtype)
        for _ in range(self.layers):
            # Biases are redundant before a LayerNorm.
            x = nn.Dense(self.units, use_bias=self.norm == "none", dtype=self.dtype,
                         kernel_init=dense_init())(x)
            x = activation(self.act)(Norm(self.norm, self.dtype)(x))
        return x


class ScalarDense(nn.Module):
    """Dense layer to one scalar per row: (..., F) -> (...); kernel (F,), bias ().

    Used in place of Dense(1)[..., 0] for the binary head: XLA's GPU compiler (jax 0.11.2)
    rejects train steps whose gradient holds a (1,)-shaped leaf (the summed gradient of a
    Dense(1) bias; benchmarks/results/gpu/xla_probe_2026-12-04.md). Same function and init.
    """

    dtype: jnp.dtype = jnp.float32
    kernel_init: Callable = dense_init()

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        kernel = self.param("kernel", lambda key: self.kernel_init(key, (features, 1))[:, 0])
        bias = self.param("bias", nn.initializers.zeros, ())
        return x.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class Head(nn.Module):
    """MLP torso and an output layer that parameterises a distribution.

    kind: "twohot" (``bins`` logits over symlog values in [-bin_limit, bin_limit]),
    "binary", "onehot" (``size`` classes, unimix) or "normal" (``size`` dims, mean
    tanh-squashed, std in [minstd, maxstd]).
    Input (..., F); returns a distribution with batch shape (...).
    """

    kind: str
    layers: int
    units: int
    size: int = 1
    bins: int = 255
    bin_limit: float = BIN_LIMIT
    outscale: float = 1.0
    unimix: float = 0.0
    minstd: float = 0.1
    maxstd: float = 1.0
    act: str = "silu"
    norm: str = "layer"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = MLP(self.layers, self.units, self.act, self.norm, dtype=self.dtype)(x)
        out = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name,
                                       kernel_init=dense_init(self.outscale))(x)
        if self.kind == "twohot":
            return TwoHotDist(out(self.bins, "out"), self.bin_limit)
        if self.kind == "binary":
            return BernoulliDist(ScalarDense(self.dtype, dense_init(self.outscale), name="out")(x))
        if self.kind == "onehot":
            return OneHotDist(out(self.size, "out"), self.unimix)
        if self.kind == "normal":
            mean = out(self.size, "mean").astype(jnp.float32)
            raw = out(self.size, "std").astype(jnp.float32)
            # +2 starts the std near maxstd (DreamerV3).
            std = (self.maxstd - self.minstd) * jax.nn.sigmoid(raw + 2.0) + self.minstd
            return NormalDist(jnp.tanh(mean), std)
        raise ValueError(f"head kind must be twohot|binary|onehot|normal, got {self.kind!r}")


def select_keys(shapes, cnn_pattern, mlp_pattern):
    """Splits observation shapes into (cnn, mlp) tuples of (key, shape).

    Images are rank-3 keys matching ``cnn_pattern``; vectors rank 0/1 keys matching
    ``mlp_pattern`` (patterns are regexes matched at the start of the key).
    """
    cnn, mlp = [], []
    for key, shape in sorted(shapes.items()):
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3 and re.match(cnn_pattern, key):
            cnn.append((key, shape))
        elif len(shape) in (0, 1) and re.match(mlp_pattern, key):
            mlp.append((key, shape))
    return tuple(cnn), tuple(mlp)


def _cnn_stages(shape, minres):
    height, width, _ = shape
    stages = int(round(math.log2(height / minres)))
    if height != width or height != minres * 2 ** stages or stages < 1:
        raise ValueError(f"images must be square with side minres * 2^k (k >= 1), "
                         f"got {shape} with minres {minres}")
    return stages


def _vector(x, shape):
    """(*batch, *shape) -> (*batch, max(1, prod(shape))) float32."""
    batch = x.shape[:x.ndim - len(shape)]
    return x.reshape(batch + (max(1, math.prod(shape)),)).astype(jnp.float32)


class Encoder(nn.Module):
    """Observations (dict of (*batch, *shape)) -> embedding (*batch, E).

    Images (uint8) go through a CNN (4x4, stride 2, depth doubling down to minres);
    vectors through an MLP (on symlog inputs when configured).
    """

    cnn_keys: tuple
    mlp_keys: tuple
    mlp_layers: int
    mlp_units: int
    cnn_depth: int
    minres: int = 4
    symlog_inputs: bool = True
    act: str = "silu"
    norm: str = "layer"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, obs):
        if not self.cnn_keys and not self.mlp_keys:
            raise ValueError("the encoder has no observation keys: check encoder.cnn_keys "
                             "and encoder.mlp_keys against the observation space")
        outputs = []
        if self.cnn_keys:
            outputs.append(self._cnn(obs))
        if self.mlp_keys:
            x = jnp.concatenate([_vector(obs[k], s) for k, s in self.mlp_keys], -1)
            outputs.append(MLP(self.mlp_layers, self.mlp_units, self.act, self.norm,
                               self.symlog_inputs, self.dtype)(x).astype(jnp.float32))
        return jnp.concatenate(outputs, -1)

    def _cnn(self, obs):
        first_key, first_shape = self.cnn_keys[0]
        batch = obs[first_key].shape[:-3]
        for key, shape in self.cnn_keys:
            assert obs[key].shape == batch + shape, (
                f"image {key!r}: expected {batch + shape}, got {obs[key].shape}")
        x = jnp.concatenate([obs[k].astype(jnp.float32) / 255.0 - 0.5
                             for k, _ in self.cnn_keys], -1)
        x = x.reshape((-1,) + x.shape[-3:]).astype(self.dtype)
        for i in range(_cnn_stages(first_shape, self.minres)):
            x = nn.Conv(self.cnn_depth * 2 ** i, (4, 4), (2, 2), use_bias=self.norm == "none",
                        dtype=self.dtype, kernel_init=dense_init())(x)
            x = activation(self.act)(Norm(self.norm, self.dtype)(x))
        return x.reshape(batch + (-1,)).astype(jnp.float32)


class Decoder(nn.Module):
    """Features (*batch, F) -> dict of predictions with each key's shape.

    Images: mean in pixel/255 units (CNN mirror of the encoder, +0.5 offset);
    vectors: symlog-space predictions.
    """

    cnn_keys: tuple
    mlp_keys: tuple
    mlp_layers: int
    mlp_units: int
    cnn_depth: int
    minres: int = 4
    act: str = "silu"
    norm: str = "layer"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, features):
        batch = features.shape[:-1]
        out = {}
        if self.cnn_keys:
            out.update(self._cnn(features.reshape((-1, features.shape[-1])), batch))
        if self.mlp_keys:
            x = MLP(self.mlp_layers, self.mlp_units, self.act, self.norm,
                    dtype=self.dtype)(features)
            for key, shape in self.mlp_keys:
                y = nn.Dense(max(1, math.prod(shape)), dtype=self.dtype, name=f"out_{key}",
                             kernel_init=dense_init())(x)
                out[key] = y.astype(jnp.float32).reshape(batch + shape)
        return out

    def _cnn(self, x, batch):
        shape = self.cnn_keys[0][1]
        stages = _cnn_stages(shape, self.minres)
        channels = [s[-1] for _, s in self.cnn_keys]
        depth = self.cnn_depth * 2 ** (stages - 1)
        x = nn.Dense(self.minres * self.minres * depth, dtype=self.dtype,
                     kernel_init=dense_init())(x.astype(self.dtype))
        x = x.reshape((-1, self.minres, self.minres, depth))
        for i in reversed(range(stages)):
            last = i == 0
            features = sum(channels) if last else self.cnn_depth * 2 ** (i - 1)
            x = nn.ConvTranspose(features, (4, 4), (2, 2), use_bias=last or self.norm == "none",
                                 dtype=self.dtype, kernel_init=dense_init())(x)
            if not last:
                x = activation(self.act)(Norm(self.norm, self.dtype)(x))
        x = x.astype(jnp.float32) + 0.5
        parts = jnp.split(x, list(itertools.accumulate(channels))[:-1], -1)
        return {k: p.reshape(batch + s) for (k, s), p in zip(self.cnn_keys, parts)}
