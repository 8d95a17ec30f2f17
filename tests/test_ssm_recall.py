"""A tiny SSMStack remembers a bit across a gap far longer than its width."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import ssm

GAP, BATCH, WIDTH, STATE = 100, 32, 8, 16


def recall_batch(key, batch):
    """Step 0 shows a bit (+-1) with a cue, GAP steps of random distractor bits
    follow, the last step asks for the bit. Returns inputs (T, batch, 4) and the
    bit (batch,) in {0, 1}."""
    key_bit, key_noise = jax.random.split(key)
    bit = jax.random.bernoulli(key_bit, 0.5, (batch,))
    steps = GAP + 1
    x = jnp.zeros((steps, batch, 4))
    x = x.at[0, :, 0].set(jnp.where(bit, 1.0, -1.0)).at[0, :, 1].set(1.0)
    noise = jax.random.rademacher(key_noise, (GAP - 1, batch), jnp.float32)
    x = x.at[1:-1, :, 2].set(noise).at[-1, :, 3].set(1.0)
    return x, bit.astype(jnp.float32)


class Recaller(nn.Module):
    @nn.compact
    def __call__(self, x):
        u = nn.Dense(WIDTH)(x)
        reset = jnp.zeros(x.shape[:-1], bool).at[0].set(True)
        y, _ = ssm.SSMStack(n_layers=1, state_size=STATE)(u, reset)
        return nn.Dense(1)(y[-1])[..., 0]


def test_tiny_stack_recalls_a_bit_seen_one_hundred_steps_earlier():
    model = Recaller()
    key_init, key_data, key_eval = jax.random.split(jax.random.key(0), 3)
    params = model.init(key_init, recall_batch(key_data, 2)[0])
    optimizer = optax.adam(1e-2)

    def loss_fn(params, x, bit):
        return optax.sigmoid_binary_cross_entropy(model.apply(params, x), bit).mean()

    @jax.jit
    def train(params, opt_state, key):
        x, bit = recall_batch(key, BATCH)
        loss, grads = jax.value_and_grad(loss_fn)(params, x, bit)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    for key in jax.random.split(key_data, 200):
        params, opt_state, loss = train(params, opt_state, key)
    x, bit = recall_batch(key_eval, 512)
    accuracy = float(jnp.mean((model.apply(params, x) > 0) == (bit > 0.5)))
    assert accuracy > 0.95, f"recall accuracy {accuracy:.3f} (chance 0.5), loss {loss:.3f}"
