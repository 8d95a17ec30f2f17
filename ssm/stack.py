"""A stack of S5 layers with gating, dropout, residual and LayerNorm.

Each layer: S5 -> GELU -> GLU | MLP | none -> dropout -> residual -> LayerNorm
(post-norm; with prenorm the LayerNorm is applied to the layer input instead).
Sequence mode and single-step mode share every parameter and agree exactly.
"""

import flax.linen as nn
import jax.numpy as jnp

from ssm.s5 import S5Layer

GATINGS = ("glu", "mlp", "none")
INITIALS = ("learned", "zeros")
# The stack's fields that each of its blocks takes over unchanged.
BLOCK_FIELDS = ("state_size", "n_blocks", "discretization", "dt_min", "dt_max", "conj_sym",
                "clip_eigs", "gating", "prenorm", "dropout", "scan_mode")


class SSMBlock(nn.Module):
    """One residual layer of the stack; width H is inferred from the input."""

    state_size: int
    n_blocks: int = 1
    discretization: str = "bilinear"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conj_sym: bool = False
    clip_eigs: bool = False
    gating: str = "glu"
    prenorm: bool = False
    dropout: float = 0.0
    scan_mode: str = "auto"

    @nn.compact
    def __call__(self, u, reset, state, reset_to, deterministic, single_step):
        """u (T, *batch, H) or, with single_step, (*batch, H) -> (u', state(s)).

        reset has u's shape without H; state (*batch, P_eff) complex or None;
        reset_to (P_eff,) complex. Returns u' in u's dtype and the layer's states
        ((T, *batch, P_eff), or (*batch, P_eff) with single_step).
        """
        x = u.astype(jnp.float32)
        norm = nn.LayerNorm(name="norm")
        ssm = S5Layer(state_size=self.state_size, n_blocks=self.n_blocks,
                      discretization=self.discretization, dt_min=self.dt_min,
                      dt_max=self.dt_max, conj_sym=self.conj_sym, clip_eigs=self.clip_eigs,
                      scan_mode=self.scan_mode, name="s5")
        ssm_in = norm(x) if self.prenorm else x
        run = ssm.step if single_step else ssm
        y, states = run(ssm_in, reset, state, reset_to)
        mixed = self._mix(nn.gelu(y), x.shape[-1])
        x = x + nn.Dropout(self.dropout)(mixed, deterministic=deterministic)
        x = x if self.prenorm else norm(x)
        return x.astype(u.dtype), states

    def _mix(self, g, width):
        if self.gating == "glu":
            value = nn.Dense(width, name="glu_value")(g)
            return value * nn.sigmoid(nn.Dense(width, name="glu_gate")(g))
        if self.gating == "mlp":
            return nn.Dense(width, name="mlp")(g)
        return g


class SSMStack(nn.Module):
    """n_layers S5 blocks, time-major with arbitrary batch dims, width H in = out.

    States are tuples of n_layers complex64 arrays of width P_eff = state_size
    (state_size // 2 with conj_sym). A reset at step t makes every layer's state
    the initial state (learned per layer, zero-initialised; or zeros) before t.
    """

    n_layers: int
    state_size: int
    n_blocks: int = 1
    discretization: str = "bilinear"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conj_sym: bool = False
    clip_eigs: bool = False
    gating: str = "glu"
    prenorm: bool = False
    dropout: float = 0.0
    initial: str = "learned"
    scan_mode: str = "auto"

    @property
    def effective_size(self):
        return self.state_size // 2 if self.conj_sym else self.state_size

    def setup(self):
        self._check_fields()
        block = {field: getattr(self, field) for field in BLOCK_FIELDS}
        self.layers = [SSMBlock(**block) for _ in range(self.n_layers)]
        if self.initial == "learned":
            # [real, imag] per layer: real parameters, zero start = "zeros" at init.
            self.initial_params = self.param(
                "initial_state", nn.initializers.zeros,
                (self.n_layers, self.effective_size, 2))

    def _check_fields(self):
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {self.gating!r}")
        if self.initial not in INITIALS:
            raise ValueError(f"initial must be one of {INITIALS}, got {self.initial!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def _initial_vectors(self):
        """n_layers (P_eff,) complex64 initial states."""
        if self.initial == "zeros":
            return [jnp.zeros((self.effective_size,), jnp.complex64)] * self.n_layers
        pairs = self.initial_params
        return list((pairs[..., 0] + 1j * pairs[..., 1]).astype(jnp.complex64))

    def initial_state(self, batch_shape):
        """Tuple of n_layers (*batch_shape, P_eff) complex64 initial states."""
        shape = tuple(batch_shape) + (self.effective_size,)
        return tuple(jnp.broadcast_to(x, shape) for x in self._initial_vectors())

    def __call__(self, u, reset, state=None, deterministic=True):
        """Sequence mode.

        Args:
          u: (T, *batch, H) float inputs.
          reset: (T, *batch) bool; True: states become the initial state before t.
          state: tuple of n_layers (*batch, P_eff) complex64, the states before
            step 0; None means the initial state.
          deterministic: False applies dropout (needs a "dropout" rng).

        Returns:
          y (T, *batch, H) in u's dtype, and a tuple of n_layers
          (T, *batch, P_eff) complex64: each layer's state after every step.
        """
        if u.ndim < 2:
            raise ValueError(f"SSMStack expects u of shape (T, *batch, H), got {u.shape}")
        return self._run(u, reset, state, deterministic, single_step=False)

    def step(self, u, reset, state, deterministic=True):
        """Single step: u (*batch, H), reset (*batch,) bool, state tuple of
        n_layers (*batch, P_eff) (or None = initial) -> (y (*batch, H), new state)."""
        if u.ndim < 1:
            raise ValueError(f"SSMStack.step expects u of shape (*batch, H), got {u.shape}")
        return self._run(u, reset, state, deterministic, single_step=True)

    def _run(self, u, reset, state, deterministic, single_step):
        reset = jnp.asarray(reset)
        if reset.shape != u.shape[:-1]:
            raise ValueError(f"reset must have shape {u.shape[:-1]} (u without its "
                             f"feature axis), got {reset.shape}")
        batch = u.shape[:-1] if single_step else u.shape[1:-1]
        initials = self._initial_vectors()
        states = initials if state is None else self._checked(state, batch)
        outputs = []
        for layer, layer_state, initial in zip(self.layers, states, initials):
            u, layer_states = layer(u, reset, layer_state, initial, deterministic,
                                    single_step)
            outputs.append(layer_states)
        return u, tuple(outputs)

    def _checked(self, state, batch):
        expected = tuple(batch) + (self.effective_size,)
        if len(state) != self.n_layers or any(s.shape != expected for s in state):
            raise ValueError(
                f"state must be a tuple of {self.n_layers} arrays of shape {expected}, "
                f"got shapes {[getattr(s, 'shape', None) for s in state]}")
        return state
