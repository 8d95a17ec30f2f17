"""DreamerV3's LayerNorm GRU as a resettable recurrent core (the `ssm_type: gru` baseline).

Same single-step interface as `ssm.SSMStack.step`: ``step(u, reset, state) ->
(y, new_state)`` with y = new_state = h_t of width ``deter``.
"""

import flax.linen as nn
import jax.numpy as jnp

from recall2imagine.nets import Norm, dense_init


class GRUCore(nn.Module):
    """h_t = GRU(u_t, h_{t-1}); state (*batch, deter) float32."""

    deter: int
    norm: str = "layer"
    initial: str = "learned"
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.gates = nn.Dense(3 * self.deter, use_bias=self.norm == "none", dtype=self.dtype,
                              kernel_init=dense_init())
        self.gates_norm = Norm(self.norm, self.dtype)
        if self.initial == "learned":
            self.initial_raw = self.param("initial_state", nn.initializers.zeros, (self.deter,))

    def initial_state(self, batch_shape):
        """(*batch_shape, deter) initial state: tanh(learned), zero at init, or zeros."""
        shape = tuple(batch_shape) + (self.deter,)
        if self.initial == "zeros":
            return jnp.zeros(shape, jnp.float32)
        return jnp.broadcast_to(jnp.tanh(self.initial_raw), shape)

    def step(self, u, reset, state):
        """u (*batch, U), reset (*batch,) bool, state (*batch, deter) -> (h, h)."""
        assert state.shape == u.shape[:-1] + (self.deter,), (
            f"GRU state must be {u.shape[:-1] + (self.deter,)}, got {state.shape}")
        state = jnp.where(reset[..., None], self.initial_state(u.shape[:-1]), state)
        x = jnp.concatenate([u.astype(self.dtype), state.astype(self.dtype)], -1)
        reset_gate, cand, update = jnp.split(self.gates_norm(self.gates(x)), 3, -1)
        reset_gate = nn.sigmoid(reset_gate.astype(jnp.float32))
        cand = jnp.tanh(reset_gate * cand.astype(jnp.float32))
        # -1 biases the update gate towards keeping the state (DreamerV3).
        update = nn.sigmoid(update.astype(jnp.float32) - 1.0)
        new = update * cand + (1.0 - update) * state
        return new, new
