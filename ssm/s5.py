"""Diagonal complex S5 layer: discretisation maths and the Flax module.

Continuous system x' = Lambda x + B u, y = Re(C x) + D u with diagonal complex
Lambda, discretised per state with step exp(log_step). With conjugate symmetry the
layer stores one state of each conjugate pair and outputs 2 Re(C x).
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from ssm import init as hippo
from ssm.scan import scan

MAX_REAL_EIG = -1e-4


def discretize_zoh(Lambda, B, step):
    """Zero-order hold: Lbar = exp(Lambda dt), Bbar = Lambda^-1 (Lbar - 1) B.

    Lambda: (P,) complex, B: (P, H), step: (P,) or scalar -> ((P,), (P, H)).
    """
    lambda_bar = jnp.exp(Lambda * step)
    return lambda_bar, ((lambda_bar - 1.0) / Lambda)[:, None] * B


def discretize_bilinear(Lambda, B, step):
    """Bilinear (Tustin): Lbar = (1 - dt/2 Lambda)^-1 (1 + dt/2 Lambda),
    Bbar = (1 - dt/2 Lambda)^-1 dt B.

    Lambda: (P,) complex, B: (P, H), step: (P,) or scalar -> ((P,), (P, H)).
    """
    inverse = 1.0 / (1.0 - step / 2.0 * Lambda)
    return inverse * (1.0 + step / 2.0 * Lambda), (inverse * step)[:, None] * B


def clip_eigenvalues(lambda_re, max_real=MAX_REAL_EIG):
    """Keeps Re(Lambda) <= max_real < 0 so the system stays strictly stable."""
    return jnp.minimum(lambda_re, max_real)


def project_input(b_bar, u):
    """Bbar u: b_bar (P, H) complex, u (..., H) real -> (..., P) complex64."""
    # Two real matmuls instead of a complex one: u is real.
    real = u @ b_bar.real.T
    imag = u @ b_bar.imag.T
    return (real + 1j * imag).astype(jnp.complex64)


def project_output(c, d, x, u, conj_sym):
    """y = Re(C x) + D u (2 Re with conj_sym): c (H, P), x (..., P), u (..., H)."""
    y = x.real @ c.real.T - x.imag @ c.imag.T
    return (2.0 * y if conj_sym else y) + d * u


DISCRETIZE = {"bilinear": discretize_bilinear, "zoh": discretize_zoh}


def _complex(pair):
    return (pair[..., 0] + 1j * pair[..., 1]).astype(jnp.complex64)


class S5Layer(nn.Module):
    """One diagonal complex state-space layer: real (…, H) in, real (…, H) out.

    Parameters (all real float32): Lambda_re, Lambda_im, log_step (P_eff,);
    B (P_eff, H, 2) and C (H, P_eff, 2) as [real, imag]; D (H,). P_eff is
    ``state_size``, or ``state_size // 2`` with ``conj_sym``.
    """

    state_size: int
    n_blocks: int = 1
    discretization: str = "bilinear"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conj_sym: bool = False
    clip_eigs: bool = False
    scan_mode: str = "auto"

    @property
    def effective_size(self):
        return self.state_size // 2 if self.conj_sym else self.state_size

    @nn.compact
    def discrete_system(self, width):
        """(Lambda_bar (P_eff,), B_bar (P_eff, H), C (H, P_eff), D (H,)) for width H."""
        if self.discretization not in DISCRETIZE:
            raise ValueError(f"discretization must be one of {tuple(DISCRETIZE)}, "
                             f"got {self.discretization!r}")
        lam, v = hippo.hippo_init(self.state_size, self.n_blocks, self.conj_sym)
        size = lam.size
        lambda_re = self.param("Lambda_re", lambda key: jnp.asarray(lam.real, jnp.float32))
        lambda_im = self.param("Lambda_im", lambda key: jnp.asarray(lam.imag, jnp.float32))
        b = self.param("B", hippo.init_input_matrix, v, width)
        c = self.param("C", hippo.init_output_matrix, v, width)
        d = self.param("D", nn.initializers.normal(1.0), (width,))
        log_step = self.param("log_step", functools.partial(
            hippo.init_log_step, size=size, dt_min=self.dt_min, dt_max=self.dt_max))
        if self.clip_eigs:
            lambda_re = clip_eigenvalues(lambda_re)
        lambda_bar, b_bar = DISCRETIZE[self.discretization](
            (lambda_re + 1j * lambda_im).astype(jnp.complex64), _complex(b),
            jnp.exp(log_step))
        return lambda_bar, b_bar, _complex(c), d

    def __call__(self, u, reset=None, state=None, reset_to=None):
        """Sequence mode.

        Args:
          u: (T, *batch, H) real inputs.
          reset: (T, *batch) bool or None; True: the state becomes ``reset_to``
            before that step.
          state: (*batch, P_eff) complex, the state before step 0; None = reset_to.
          reset_to: broadcastable to (*batch, P_eff); None = zeros.

        Returns:
          y (T, *batch, H) in u's dtype and states (T, *batch, P_eff) complex64.
        """
        if u.ndim < 2:
            raise ValueError(f"S5Layer expects u of shape (T, *batch, H), got {u.shape}")
        reset = jnp.zeros(u.shape[:-1], bool) if reset is None else reset
        lambda_bar, b_bar, c, d = self.discrete_system(u.shape[-1])
        u32 = u.astype(jnp.float32)
        reset_to = _zeros_if_none(reset_to, self.effective_size)
        state = reset_to if state is None else state
        xs = scan(lambda_bar, project_input(b_bar, u32), reset, state,
                  mode=self.scan_mode, reset_to=reset_to)
        y = project_output(c, d, xs, u32, self.conj_sym)
        return y.astype(u.dtype), xs

    def step(self, u, reset=None, state=None, reset_to=None):
        """Single step: u (*batch, H), reset (*batch,) bool, state (*batch, P_eff)
        -> y (*batch, H) in u's dtype and the new state (*batch, P_eff) complex64."""
        lambda_bar, b_bar, c, d = self.discrete_system(u.shape[-1])
        u32 = u.astype(jnp.float32)
        reset_to = _zeros_if_none(reset_to, self.effective_size)
        previous = reset_to if state is None else state
        if reset is not None:
            previous = jnp.where(jnp.asarray(reset)[..., None], reset_to, previous)
        x = lambda_bar * previous + project_input(b_bar, u32)
        y = project_output(c, d, x, u32, self.conj_sym)
        return y.astype(u.dtype), x


def _zeros_if_none(value, size):
    if value is None:
        return jnp.zeros((size,), jnp.complex64)
    return jnp.asarray(value, jnp.complex64)
