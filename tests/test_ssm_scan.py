"""ssm.scan: both modes equal a plain NumPy loop, values and gradients, resets included."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssm
from ssm.scan import combine

BATCH, WIDTH = 3, 4


def reference_scan(a, b, reset, x0, reset_to):
    """Plain loop in float64/complex128. reset (T, BATCH); others full shape."""
    x, xs = x0, []
    for t in range(b.shape[0]):
        previous = np.where(reset[t][:, None], reset_to, x)
        x = a[t] * previous + b[t]
        xs.append(x)
    return np.stack(xs)


def reference_vjp(a, reset, x0, xs, cotangent):
    """Transpose of the recurrence (JAX's convention: no conjugation).

    Returns gradients w.r.t. a, b and x0 (x0 is also the reset value)."""
    steps = a.shape[0]
    previous = np.stack([np.where(reset[t][:, None], x0, xs[t - 1] if t else x0)
                         for t in range(steps)])
    grad_x = np.zeros_like(cotangent)
    carried = np.zeros_like(cotangent[0])
    for t in reversed(range(steps)):
        grad_x[t] = cotangent[t] + carried
        feeds_back = ~reset[t][:, None] & (t > 0)
        carried = np.where(feeds_back, grad_x[t] * a[t], 0)
    from_x0 = reset[:, :, None] | (np.arange(steps) == 0)[:, None, None]
    grad_x0 = np.sum(np.where(from_x0, grad_x * a, 0), axis=0)
    return grad_x * previous, grad_x, grad_x0


def random_problem(steps, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = (steps, BATCH, WIDTH)

    def draw(size, scale=1.0):
        real = rng.normal(size=size) * scale
        if dtype == "complex":
            return real + 1j * rng.normal(size=size) * scale
        return real

    # |a| in [0.5, 1): long memory, as a discretised stable system has.
    magnitude = rng.uniform(0.5, 1.0, shape)
    a = magnitude * (np.exp(1j * rng.uniform(-np.pi, np.pi, shape))
                     if dtype == "complex" else rng.choice([-1, 1], shape))
    reset = rng.random((steps, BATCH)) < 0.2
    reset[0] = True
    reset[-1] = True
    return a, draw(shape), reset, draw((BATCH, WIDTH)), draw(shape)


@functools.partial(jax.jit, static_argnames="mode")
def scan_and_vjp(a, b, reset, x0, cotangent, mode):
    """States and gradients w.r.t. (a, b, x0) for the cotangent."""
    xs, vjp = jax.vjp(lambda a, b, x0: ssm.scan(a, b, reset, x0, mode=mode), a, b, x0)
    return xs, vjp(cotangent)


def to32(x):
    return jnp.asarray(x, jnp.complex64 if np.iscomplexobj(x) else jnp.float32)


def relative_error(actual, expected):
    return np.linalg.norm(np.asarray(actual) - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("dtype", ["real", "complex"])
@pytest.mark.parametrize("steps", [1, 2, 7, 64, 1000])
def test_both_modes_match_numpy_loop_values_and_gradients(steps, dtype):
    a, b, reset, x0, cotangent = random_problem(steps, dtype, seed=steps)
    expected = reference_scan(a, b, reset, x0, x0)
    expected_grads = reference_vjp(a, reset, x0, expected, cotangent)
    for mode in ("parallel", "sequential"):
        xs, grads = scan_and_vjp(to32(a), to32(b), reset, to32(x0), to32(cotangent),
                                 mode=mode)
        assert xs.shape == b.shape and xs.dtype == to32(b).dtype
        assert relative_error(xs, expected) < 1e-5, mode
        for name, grad, want in zip("a b x0".split(), grads, expected_grads):
            assert relative_error(grad, want) < 1e-5, (mode, name)


def test_reset_at_first_step_ignores_x0_and_restores_reset_value():
    a, b, reset, x0, _ = random_problem(7, "complex", seed=1)
    reset_to = np.random.default_rng(2).normal(size=WIDTH) + 0.5j
    expected = reference_scan(a, b, reset, x0, np.broadcast_to(reset_to, x0.shape))
    for mode in ("parallel", "sequential"):
        xs = ssm.scan(to32(a), to32(b), reset, to32(x0), mode=mode,
                      reset_to=to32(reset_to))
        assert relative_error(xs, expected) < 1e-5, mode


def test_without_reset_at_first_step_the_state_before_step_zero_is_x0():
    a, b, reset, x0, _ = random_problem(7, "real", seed=3)
    reset[0] = False
    expected = reference_scan(a, b, reset, x0, np.zeros_like(x0))
    for mode in ("parallel", "sequential"):
        xs = ssm.scan(to32(a), to32(b), reset, to32(x0), mode=mode, reset_to=0.0)
        assert relative_error(xs, expected) < 1e-5, mode
        assert not np.allclose(xs[0], b[0], atol=1e-3)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_time_invariant_a_and_any_reset_layout_give_the_same_states(mode):
    a, b, reset, x0, _ = random_problem(9, "complex", seed=4)
    a_const = a[0, 0]
    expected = reference_scan(np.broadcast_to(a_const, b.shape), b, reset, x0, x0)
    layouts = [reset, reset[:, :, None]]
    for layout in layouts:
        xs = ssm.scan(to32(a_const), to32(b), layout, to32(x0), mode=mode)
        assert relative_error(xs, expected) < 1e-5
    shared = np.broadcast_to(reset[:, :1], reset.shape)
    expected_shared = reference_scan(np.broadcast_to(a_const, b.shape), b, shared, x0, x0)
    xs = ssm.scan(to32(a_const), to32(b), reset[:, 0], to32(x0), mode=mode)
    assert relative_error(xs, expected_shared) < 1e-5


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_non_finite_values_before_a_reset_do_not_leak_past_it(mode):
    a, b, reset, x0, _ = random_problem(8, "real", seed=5)
    b[3] = np.inf
    reset[4] = True
    xs = np.asarray(ssm.scan(to32(a), to32(b), reset, to32(x0), mode=mode))
    assert np.all(np.isfinite(xs[4:])) and not np.all(np.isfinite(xs[3]))


def test_auto_mode_and_vmap_over_batch_agree_with_reference():
    a, b, reset, x0, _ = random_problem(16, "complex", seed=6)
    expected = reference_scan(a, b, reset, x0, x0)
    auto = ssm.scan(to32(a), to32(b), reset, to32(x0))
    assert relative_error(auto, expected) < 1e-5
    per_sequence = jax.vmap(functools.partial(ssm.scan, mode="parallel"),
                            in_axes=(1, 1, 1, 0), out_axes=1)
    vmapped = per_sequence(to32(a), to32(b), reset, to32(x0))
    assert relative_error(vmapped, expected) < 1e-5


def test_combine_is_associative_with_absolute_elements():
    rng = np.random.default_rng(7)
    elements = [(rng.normal(size=5), rng.normal(size=5), rng.random(5) < 0.5)
                for _ in range(3)]
    left = combine(combine(elements[0], elements[1]), elements[2])
    right = combine(elements[0], combine(elements[1], elements[2]))
    for lhs, rhs in zip(left, right):
        np.testing.assert_allclose(lhs, rhs, rtol=1e-6)


def test_bad_arguments_raise_clear_errors():
    b = jnp.zeros((5, 2, 3))
    with pytest.raises(ValueError, match="scan mode"):
        ssm.scan(0.5, b, jnp.zeros(5, bool), 0.0, mode="fast")
    with pytest.raises(ValueError, match="reset"):
        ssm.scan(0.5, b, jnp.zeros((4,), bool), 0.0)
    with pytest.raises(ValueError, match="reset"):
        ssm.scan(0.5, b, jnp.zeros((5, 3), bool), 0.0)
    with pytest.raises(ValueError, match="broadcast"):
        ssm.scan(jnp.zeros(4), b, jnp.zeros(5, bool), 0.0)
