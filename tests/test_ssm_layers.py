"""S5Layer and SSMStack: sequence mode == step mode across resets, conjugate
symmetry, learned initial state, jit / vmap / grad, dtypes."""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import ssm

STEPS, BATCH, WIDTH, STATE = 9, 2, 6, 8


def perturb(params, key, scale):
    """Uniform noise in [-scale, scale] on every parameter, so a zero learned
    initial state cannot hide a wrong reset (one random draw: cheap to compile)."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return unravel(flat + jax.random.uniform(key, flat.shape, minval=-scale, maxval=scale))


def init_perturbed(stack, key, u, reset):
    """Initial parameters plus noise, in one compilation."""
    key_init, key_noise = jax.random.split(key)
    return jax.jit(lambda: perturb(stack.init(key_init, u, reset), key_noise, 0.1))()


def with_path(params, name, fn):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: fn(x) if name in jax.tree_util.keystr(path) else x, params)


def make_stack(**overrides):
    fields = dict(n_layers=2, state_size=STATE, n_blocks=2)
    return ssm.SSMStack(**{**fields, **overrides})


# Every option off its default, sharing parameter shapes with the conj_sym layer test.
OPTIONS = dict(discretization="zoh", conj_sym=True, clip_eigs=True, gating="mlp",
               prenorm=True)


@pytest.fixture(scope="module")
def inputs():
    key_u, key_r = jax.random.split(jax.random.key(0))
    u = jax.random.normal(key_u, (STEPS, BATCH, WIDTH))
    reset = np.array(jax.random.bernoulli(key_r, 0.25, (STEPS, BATCH)))
    reset[0, 0] = True
    reset[-1, 1] = True
    reset[4] = True
    return u, jnp.asarray(reset)


@pytest.fixture(scope="module")
def stack_params(inputs):
    u, reset = inputs
    # Non-zero learned initial state: a reset must restore it, not zeros.
    return init_perturbed(make_stack(), jax.random.key(6), u, reset)


@pytest.fixture(scope="module")
def option_params(inputs):
    u, reset = inputs
    return init_perturbed(make_stack(**OPTIONS), jax.random.key(10), u, reset)


@pytest.fixture(scope="module")
def start_state():
    keys = jax.random.split(jax.random.key(8), 2)
    return tuple(jax.random.normal(k, (BATCH, STATE), jnp.complex64) for k in keys)


@pytest.fixture(scope="module")
def sequence_fns():
    return {mode: jax.jit(make_stack(scan_mode=mode).apply)
            for mode in ("parallel", "sequential")}


@pytest.fixture(scope="module")
def step_fn():
    return jax.jit(functools.partial(make_stack().apply, method=ssm.SSMStack.step))


def initial_state(params, batch_shape, **overrides):
    return make_stack(**overrides).apply(params, batch_shape,
                                         method=ssm.SSMStack.initial_state)


def run_steps(step_fn, params, u, reset, state):
    ys, states = [], []
    for t in range(u.shape[0]):
        y, state = step_fn(params, u[t], reset[t], state)
        ys.append(y)
        states.append(state)
    return jnp.stack(ys), jax.tree.map(lambda *xs: jnp.stack(xs), *states)


# ---------------------------------------------------------------- S5Layer


@pytest.mark.parametrize("discretization", ["bilinear", "zoh"])
def test_layer_equals_explicit_recurrence_and_its_step_method(
        inputs, stack_params, discretization):
    u, reset = inputs
    layer = ssm.S5Layer(STATE, n_blocks=2, discretization=discretization,
                        scan_mode="parallel")
    params = {"params": stack_params["params"]["layers_0"]["s5"]}
    start = jax.random.normal(jax.random.key(3), (BATCH, STATE)) * (1 + 1j)
    reset_to = jnp.arange(STATE) * (0.1 - 0.2j)
    y, xs = jax.jit(layer.apply)(params, u, reset, start, reset_to)

    lambda_bar, b_bar, c, d = map(np.asarray, layer.apply(
        params, WIDTH, method=ssm.S5Layer.discrete_system))
    u_np, reset_np = np.asarray(u), np.asarray(reset)
    x, want_y, want_x = np.asarray(start), [], []
    for t in range(STEPS):
        x = np.where(reset_np[t][:, None], reset_to, x)
        x = lambda_bar * x + u_np[t] @ b_bar.T
        want_x.append(x)
        want_y.append((x @ c.T).real + d * u_np[t])
    np.testing.assert_allclose(xs, np.stack(want_x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, np.stack(want_y), rtol=1e-5, atol=1e-5)

    step = jax.jit(functools.partial(layer.apply, method=ssm.S5Layer.step,
                                     reset_to=reset_to))
    step_y, step_x = run_steps(step, params, u, reset, start)
    np.testing.assert_allclose(step_y, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step_x, xs, rtol=1e-5, atol=1e-5)


def test_conjugate_symmetric_layer_equals_the_full_complex_system(inputs, option_params):
    u, reset = inputs
    settings = dict(discretization="zoh", clip_eigs=True, scan_mode="sequential")
    half = ssm.S5Layer(STATE, conj_sym=True, **settings)
    p = option_params["params"]["layers_0"]["s5"]

    def conj_pair(x):  # [real, imag] pairs of the conjugate states
        return x * jnp.array([1.0, -1.0])

    full_params = {"params": {
        "Lambda_re": jnp.concatenate([p["Lambda_re"], p["Lambda_re"]]),
        "Lambda_im": jnp.concatenate([p["Lambda_im"], -p["Lambda_im"]]),
        "log_step": jnp.concatenate([p["log_step"], p["log_step"]]),
        "B": jnp.concatenate([p["B"], conj_pair(p["B"])], axis=0),
        "C": jnp.concatenate([p["C"], conj_pair(p["C"])], axis=1),
        "D": p["D"]}}
    full = ssm.S5Layer(STATE, conj_sym=False, **settings)
    y_half, x_half = jax.jit(half.apply)({"params": p}, u, reset)
    y_full, x_full = jax.jit(full.apply)(full_params, u, reset)
    assert x_half.shape[-1] == STATE // 2 and x_full.shape[-1] == STATE
    assert y_half.dtype == jnp.float32 and np.abs(np.asarray(y_half)).max() > 0.1
    np.testing.assert_allclose(y_half, y_full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_full[..., STATE // 2:], np.conj(x_half), atol=1e-5)


# ---------------------------------------------------------------- SSMStack


@pytest.mark.parametrize("scan_mode", ["parallel", "sequential"])
def test_stack_sequence_mode_equals_step_mode_across_resets(
        inputs, stack_params, start_state, sequence_fns, step_fn, scan_mode):
    u, reset = inputs
    for state in (start_state, None):
        y, states = sequence_fns[scan_mode](stack_params, u, reset, state)
        assert y.shape == u.shape and len(states) == 2
        assert all(s.shape == (STEPS, BATCH, STATE) and s.dtype == jnp.complex64
                   for s in states)
        state = initial_state(stack_params, (BATCH,)) if state is None else state
        step_y, step_states = run_steps(step_fn, stack_params, u, reset, state)
        np.testing.assert_allclose(step_y, y, rtol=1e-5, atol=1e-5)
        for got, want in zip(step_states, states):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_reset_restores_the_learned_initial_state_like_a_fresh_start(
        inputs, stack_params, start_state, sequence_fns):
    u, reset = inputs
    apply = sequence_fns["sequential"]
    y, states = apply(stack_params, u, reset, start_state)
    # reset[4] is True for the whole batch: steps 4.. are a new episode.
    y_fresh, states_fresh = apply(stack_params, u[4:], reset[4:], None)
    np.testing.assert_allclose(y[4:], y_fresh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states[1][4:], states_fresh[1], rtol=1e-5, atol=1e-5)
    initial = initial_state(stack_params, (BATCH,))
    assert np.abs(np.asarray(initial[0])).min() > 0, "perturbed learned state expected"
    zeroed = with_path(stack_params, "initial_state", jnp.zeros_like)
    y_zeroed, _ = apply(zeroed, u, reset, start_state)
    assert np.abs(np.asarray(y_zeroed[4] - y[4])).max() > 1e-3


def test_every_parameter_receives_gradients_including_the_initial_state(
        inputs, stack_params):
    u, reset = inputs
    stack = make_stack(scan_mode="sequential")
    assert stack_params["params"]["initial_state"].shape == (2, STATE, 2)

    def loss(params):
        y, states = stack.apply(params, u, reset)
        return jnp.sum(y ** 2) + sum(jnp.sum(jnp.abs(s) ** 2) for s in states)

    grads = jax.jit(jax.grad(loss))(stack_params)
    for path, grad in jax.tree_util.tree_leaves_with_path(grads):
        assert np.all(np.isfinite(grad)), jax.tree_util.keystr(path)
        assert np.abs(np.asarray(grad)).max() > 0, jax.tree_util.keystr(path)


def test_zeros_initial_and_no_gating_create_no_extra_parameters(inputs):
    u, reset = inputs
    stack = make_stack(initial="zeros", gating="none")
    shapes = jax.eval_shape(stack.init, jax.random.key(0), u, reset)["params"]
    assert set(shapes) == {"layers_0", "layers_1"}
    assert set(shapes["layers_0"]) == {"s5", "norm"}
    initial = stack.apply({"params": {}}, (3, 1), method=ssm.SSMStack.initial_state)
    assert [s.shape for s in initial] == [(3, 1, STATE)] * 2
    assert all(np.all(np.asarray(s) == 0) for s in initial)


def test_vmap_over_an_extra_batch_axis_equals_native_batch_dims(
        inputs, stack_params, start_state, sequence_fns):
    u, reset = inputs
    y, states = sequence_fns["parallel"](stack_params, u, reset, start_state)
    stack = make_stack(scan_mode="parallel")
    per_sequence = jax.jit(jax.vmap(
        lambda u, r, s: stack.apply(stack_params, u, r, s), in_axes=(1, 1, 0),
        out_axes=1))
    y_vmapped, states_vmapped = per_sequence(u, reset, start_state)
    np.testing.assert_allclose(y_vmapped, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states_vmapped[1], states[1], rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_keep_a_complex64_state_and_return_bfloat16(
        inputs, stack_params, sequence_fns):
    u, reset = inputs
    apply = sequence_fns["sequential"]
    y, states = apply(stack_params, u.astype(jnp.bfloat16), reset)
    y32, _ = apply(stack_params, u, reset)
    assert y.dtype == jnp.bfloat16 and all(s.dtype == jnp.complex64 for s in states)
    np.testing.assert_allclose(np.asarray(y, np.float32), y32, atol=0.1)


def test_every_option_keeps_sequence_and_step_modes_equal(inputs, option_params):
    u, reset = inputs
    stack = make_stack(**OPTIONS, scan_mode="parallel")
    y, states = jax.jit(stack.apply)(option_params, u, reset)
    assert states[0].shape == (STEPS, BATCH, STATE // 2)
    assert "mlp" in option_params["params"]["layers_0"]
    state = initial_state(option_params, (BATCH,), **OPTIONS)
    step = jax.jit(functools.partial(stack.apply, method=ssm.SSMStack.step))
    step_y, step_states = run_steps(step, option_params, u, reset, state)
    np.testing.assert_allclose(step_y, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(step_states[1], states[1], rtol=1e-5, atol=1e-5)


def test_dropout_is_active_only_when_not_deterministic(
        inputs, stack_params, sequence_fns):
    u, reset = inputs
    apply = jax.jit(make_stack(dropout=0.5, scan_mode="sequential").apply,
                    static_argnames="deterministic")
    y_eval, _ = apply(stack_params, u, reset)
    y_plain, _ = sequence_fns["sequential"](stack_params, u, reset)
    np.testing.assert_allclose(y_eval, y_plain, rtol=1e-6)
    y_train, _ = apply(stack_params, u, reset, deterministic=False,
                       rngs={"dropout": jax.random.key(13)})
    assert np.abs(np.asarray(y_train - y_eval)).max() > 1e-2


def test_bad_shapes_and_options_raise_clear_errors(inputs, stack_params, start_state):
    u, reset = inputs
    stack = make_stack()
    with pytest.raises(ValueError, match="reset must have shape"):
        stack.apply(stack_params, u, reset[:, :1])
    with pytest.raises(ValueError, match="state must be a tuple"):
        stack.apply(stack_params, u, reset, start_state[:1])
    with pytest.raises(ValueError, match="gating"):
        jax.eval_shape(make_stack(gating="swiglu").init, jax.random.key(0), u, reset)
    with pytest.raises(ValueError, match="discretization"):
        jax.eval_shape(ssm.S5Layer(STATE, discretization="euler").init,
                       jax.random.key(0), u)
