"""Resettable first-order linear recurrence along the leading (time) axis.

    x_t = a_t * (r if reset_t else x_{t-1}) + b_t,    x_{-1} = x0

where ``r`` is the reset value (``x0`` unless given). The parallel mode folds the
state that enters each reset step into that step's element, so every element is
either an affine map (no reset) or a constant (reset); the associative operator
then discards everything before the latest constant by selection, never by
multiplying with zero, so a non-finite value before a reset cannot leak past it.
"""

import functools

import jax
import jax.numpy as jnp

MODES = ("auto", "parallel", "sequential")


# Jitted so that eager calls compile once instead of dispatching every tree level.
@functools.partial(jax.jit, static_argnames="mode")
def scan(a, b, reset, x0, mode="auto", reset_to=None):
    """All states of the resettable linear recurrence.

    Args:
      a: (T, ...) or any shape broadcastable to ``b.shape`` (numpy rules, so a
        time-invariant ``(P,)`` works): the multiplier, real or complex.
      b: (T, ...) the additive input, real or complex.
      reset: bool, (T,) or (T, *lead) with ``lead`` a prefix of ``b.shape[1:]``;
        missing trailing dims are appended as singletons, e.g. (T, B) against
        ``b`` of shape (T, B, P). Any (T, ...) broadcastable to ``b`` also works.
        ``reset[t]`` means the state is replaced by the reset value before step t.
      x0: broadcastable to ``b.shape[1:]``: the state before step 0.
      mode: "parallel" (associative scan), "sequential" (``lax.scan``) or "auto"
        (parallel on accelerators, sequential on CPU where it is faster).
      reset_to: broadcastable to ``b.shape[1:]``: the state a reset restores;
        ``None`` means ``x0``.

    Returns:
      (T, ...) array of ``b.shape`` with every x_t, in the result dtype of
      ``a``, ``b``, ``x0`` and ``reset_to``.
    """
    a, b, reset, x0, reset_to = _prepare(a, b, reset, x0, reset_to)
    mode = _resolve_mode(mode)
    if mode == "parallel":
        return _parallel(a, b, reset, x0, reset_to)
    return _sequential(a, b, reset, x0, reset_to)


def _resolve_mode(mode):
    if mode not in MODES:
        raise ValueError(f"scan mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "sequential" if jax.default_backend() == "cpu" else "parallel"
    return mode


def _prepare(a, b, reset, x0, reset_to):
    """Checks shapes and brings every operand to b's shape and dtype."""
    b = jnp.asarray(b)
    if b.ndim < 1 or b.shape[0] < 1:
        raise ValueError(f"b must be (T, ...) with T >= 1, got shape {b.shape}")
    reset_to = x0 if reset_to is None else reset_to
    dtype = jnp.result_type(a, b, x0, reset_to)
    state_shape = b.shape[1:]
    try:
        a = jnp.broadcast_to(jnp.asarray(a, dtype), b.shape)
        x0 = jnp.broadcast_to(jnp.asarray(x0, dtype), state_shape)
        reset_to = jnp.broadcast_to(jnp.asarray(reset_to, dtype), state_shape)
    except ValueError as error:
        raise ValueError(
            f"a, x0 and reset_to must broadcast to b {b.shape} / its state "
            f"{state_shape}: {error}") from None
    return a, b.astype(dtype), _expand_reset(reset, b.shape), x0, reset_to


def _expand_reset(reset, shape):
    """(T, *lead) bool -> (T, *lead, 1, ..., 1) broadcastable to ``shape``."""
    reset = jnp.asarray(reset, bool)
    if reset.ndim < 1 or reset.ndim > len(shape) or reset.shape[0] != shape[0]:
        raise ValueError(
            f"reset must be (T, ...) with T={shape[0]} and at most {len(shape)} "
            f"dims, got shape {reset.shape} for b of shape {shape}")
    reset = reset.reshape(reset.shape + (1,) * (len(shape) - reset.ndim))
    try:
        jnp.broadcast_shapes(reset.shape, shape)
    except ValueError:
        raise ValueError(
            f"reset of shape {reset.shape} (trailing dims appended) does not "
            f"broadcast to b of shape {shape}") from None
    return reset


def _sequential(a, b, reset, x0, reset_to):
    def step(x, inputs):
        a_t, b_t, reset_t = inputs
        x = a_t * jnp.where(reset_t, reset_to, x) + b_t
        return x, x

    _, xs = jax.lax.scan(step, x0, (a, b, reset))
    return xs


def _parallel(a, b, reset, x0, reset_to):
    # Step 0 always starts from a known state (x0 or reset_to): mark it absolute.
    is_first = (jnp.arange(b.shape[0]) == 0).reshape((-1,) + (1,) * (b.ndim - 1))
    absolute = reset | is_first
    entering = jnp.where(reset, reset_to, x0)
    b_abs = jnp.where(absolute, a * entering + b, b)
    _, xs, _ = jax.lax.associative_scan(combine, (a, b_abs, absolute))
    return xs


def combine(earlier, later):
    """Composes two recurrence elements (a, b, absolute), ``earlier`` first.

    An element maps x -> b if absolute else a * x + b. Used by the parallel scan;
    associative, with absolute elements acting as left zeros.
    """
    a1, b1, abs1 = earlier
    a2, b2, abs2 = later
    a = jnp.where(abs2, a2, a1 * a2)
    b = jnp.where(abs2, b2, a2 * b1 + b2)
    return a, b, abs1 | abs2
