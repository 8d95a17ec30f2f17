"""HCAMCore: sequence mode == step mode across resets, causality, state_at for
imagination, memory clearing, zero read, top_k, stop-gradients, serialization.

Two configurations share one parameter set: BASE (top_k 2, memory cleared at resets)
and ALL (top_k 0, memory kept across episodes). M = 3 < chunks per episode, so ring
eviction is exercised. Jitted functions are cached per configuration (compiles
dominate the run time).
"""

import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine.hcam import HCAMCore, chunk_read, chunk_weights, gathers, masked_softmax, select_top_k

T, B, H, C, M = 24, 2, 8, 4, 3
# base reads memory by gathering each query's chunks in training, all3 densely (both are
# checked against the step loop or top_k 0); `gathers` picks one by length otherwise.
CONFIGS = {"base": dict(top_k=2, read="gather"), "all": dict(top_k=0, across_episodes=True),
           "all3": dict(top_k=3, across_episodes=True, read="dense")}
# Episode starts: row 0 mid-chunk at 10 (episode step 10), row 1 at 17 (step 17).
RESETS = ((0, 0), (10, 0), (0, 1), (17, 1))


def make_core(name):
    return HCAMCore(features=H, n_layers=2, chunk=C, heads=2, width=8, max_chunks=M,
                    **CONFIGS[name])


@functools.cache
def jitted(name):
    """(sequence, step loop, state_at) for a configuration, each compiled once."""
    core = make_core(name)

    def loop(params, u, reset, state):
        def body(state, inputs):
            y, state = core.apply(params, *inputs, state, method=HCAMCore.step)
            return state, (y, state)
        return jax.lax.scan(body, state, (u, reset))

    sequence = jax.jit(lambda params, u, reset, state=None: core.apply(params, u, reset, state))
    state_at = jax.jit(lambda params, trace, t, b: core.apply(params, trace, t, b,
                                                              method=HCAMCore.state_at))
    return sequence, jax.jit(loop), state_at


def initial(batch=B):
    return make_core("base").initial_state((batch,))


def episode_steps(reset):
    """(T, B) numpy episode step of each step."""
    steps = np.zeros(reset.shape, int)
    for t in range(1, reset.shape[0]):
        steps[t] = np.where(reset[t], 0, steps[t - 1] + 1)
    return steps


def assert_trees_close(a, b, atol=1e-5, rtol=1e-7):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x, float),
                                                         np.asarray(y, float), rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def data():
    u = jax.random.normal(jax.random.key(0), (T, B, H))
    reset = np.zeros((T, B), bool)
    for t, b in RESETS:
        reset[t, b] = True
    return u, jnp.asarray(reset)


@pytest.fixture(scope="module")
def init_params(data):
    return jax.jit(make_core("base").init)(jax.random.key(1), *data)


@pytest.fixture(scope="module")
def params(init_params):
    """Initial parameters with a random episode clock (it starts at zero), so every test
    below also checks that the clock agrees between modes."""
    params = init_params
    kernel = params["params"]["clock"]["kernel"]
    clock = {"kernel": jax.random.normal(jax.random.key(2), kernel.shape) * 0.5}
    return {"params": {**params["params"], "clock": clock}}


@pytest.fixture(scope="module")
def stepped(params, data):
    """name -> (outputs (T, B, H), states after every step) of the step loop."""
    return {name: jitted(name)[1](params, *data, initial())[1] for name in ("base", "all")}


@pytest.mark.parametrize("name", ["base", "all"])
def test_sequence_matches_step_loop(params, data, stepped, name):
    y, _ = jitted(name)[0](params, *data)
    np.testing.assert_allclose(y, stepped[name][0], atol=1e-5)


def test_sequence_from_a_given_state_matches_step_loop(params, data, stepped):
    sequence, loop, state_at = jitted("base")
    start = jax.tree.map(lambda x: x[-1], stepped["base"][1])
    u = jax.random.normal(jax.random.key(2), (T, B, H))
    reset = jnp.zeros((T, B), bool).at[7, 0].set(True)
    y, trace = sequence(params, u, reset, start)
    y_ref, states = loop(params, u, reset, start)[1]
    np.testing.assert_allclose(y, y_ref, atol=1e-5)
    t, b = jnp.array([3, 20]), jnp.array([0, 1])
    assert_trees_close(state_at(params, trace, t, b), jax.tree.map(lambda x: x[t, b], states))


def test_no_leak_from_later_inputs(params, data):
    u, reset = data
    y, _ = jitted("base")[0](params, u, reset)
    later = u.at[13:].add(jax.random.normal(jax.random.key(3), (T - 13, B, H)))
    y_later, _ = jitted("base")[0](params, later, reset)
    np.testing.assert_allclose(y_later[:13], y[:13], atol=1e-6)
    assert np.abs(y_later[13:] - y[13:]).min() > 0


# (t, b) imagination starts: row 1 at 14 (chunks 0-2 stored, chunk 3 completes at 15),
# row 0 at 20 (episode step 10: two chunks and three rows in the accumulator).
STARTS = (jnp.array([14, 20]), jnp.array([1, 0]))


def test_state_at_equals_step_state(params, data, stepped):
    _, trace = jitted("base")[0](params, *data)
    t, b = STARTS
    state = jitted("base")[2](params, trace, t, b)
    assert_trees_close(state, jax.tree.map(lambda x: x[t, b], stepped["base"][1]))
    for layer in state["layers"]:
        np.testing.assert_allclose(layer["keys"], layer["contents"].mean(-2), atol=1e-6)
    assert state["valid"].sum(-1).tolist() == [3, 2]


def test_imagination_from_state_at(params, data):
    """Stepping on from state_at(t, b) = stepping from the start through t, then on the
    new inputs; and later real inputs do not matter."""
    sequence, loop, state_at = jitted("base")
    u, reset = data
    t, b = STARTS
    new = jax.random.normal(jax.random.key(4), (T, B, H))
    no_reset = jnp.zeros((T, B), bool)
    _, trace = sequence(params, u, reset)
    y_imag = loop(params, new, no_reset, state_at(params, trace, t, b))[1][0]

    ref_u, ref_reset = np.array(new), np.zeros((T, B), bool)
    later = np.array(u)
    for n, (tn, bn) in enumerate(zip(t.tolist(), b.tolist())):
        ref_u[:, n] = np.concatenate([u[:tn + 1, bn], new[:T - tn - 1, n]])
        ref_reset[:tn + 1, n] = reset[:tn + 1, bn]
        later[tn + 1:, bn] += 1.0
    y_ref = loop(params, jnp.asarray(ref_u), jnp.asarray(ref_reset), initial())[1][0]
    for n, tn in enumerate(t.tolist()):
        np.testing.assert_allclose(y_imag[:T - tn - 1, n], y_ref[tn + 1:, n], atol=1e-5)

    _, trace_later = sequence(params, jnp.asarray(later), reset)
    state_later = state_at(params, trace_later, t, b)
    assert_trees_close(state_later, state_at(params, trace, t, b), atol=1e-6)
    y_later = loop(params, new, no_reset, state_later)[1][0]
    np.testing.assert_allclose(y_later, y_imag, atol=1e-6)


def test_reset_clears_memory_unless_across_episodes(params, data):
    """Row 0 restarts at step 10: a fresh run on the inputs from there gives the same
    outputs when memory is cleared, different ones when it is kept."""
    u, reset = data
    fresh_u = jnp.concatenate([u[10:], u[:10]])
    fresh_reset = jnp.zeros((T, B), bool).at[0].set(True)
    gaps = {}
    for name in ("base", "all"):
        y, _ = jitted(name)[0](params, u, reset)
        y_fresh, _ = jitted(name)[0](params, fresh_u, fresh_reset)
        gaps[name] = np.abs(y[10:, 0] - y_fresh[:T - 10, 0]).max()
    assert gaps["base"] < 1e-5 and gaps["all"] > 1e-3


def test_readout_is_zero_without_a_visible_chunk(params, data):
    u, reset = data
    capture = jax.jit(lambda p: make_core("base").apply(
        p, u, reset, capture_intermediates=lambda module, _: module.name == "read_out",
        mutable=["intermediates"]))
    _, state = capture(params)
    readable = episode_steps(np.asarray(reset)) >= C
    for block in ("blocks_0", "blocks_1"):
        (read,) = state["intermediates"][block]["read_out"]["__call__"]
        magnitude = np.abs(np.asarray(read)).sum(-1)
        assert (magnitude[~readable] == 0).all()
        assert (magnitude[readable] > 0).all()


def test_chunk_weights_top_k():
    logits = jnp.array([[0.5, 2.0, -1.0, 1.0, 3.0]])
    visible = jnp.array([[True, True, True, True, False]])
    every = chunk_weights(logits, visible, 0)
    np.testing.assert_allclose(every[0, :4], jax.nn.softmax(logits[0, :4]), rtol=1e-6)
    assert every[0, 4] == 0
    np.testing.assert_allclose(chunk_weights(logits, visible, 4), every, rtol=1e-6)
    np.testing.assert_allclose(chunk_weights(logits, visible, 9), every, rtol=1e-6)
    # The two best visible chunks (1 and 3; 4 is not visible) share the weight.
    first, second = jax.nn.softmax(jnp.array([2.0, 1.0])).tolist()
    np.testing.assert_allclose(chunk_weights(logits, visible, 2)[0], [0, first, 0, second, 0],
                               rtol=1e-6)
    nothing = jnp.zeros_like(visible)
    assert (chunk_weights(logits, nothing, 0) == 0).all()
    assert (select_top_k(logits, nothing, 2)[1] == 0).all()
    grad = jax.grad(lambda x: masked_softmax(x, nothing).sum() + chunk_weights(x, visible, 2)[0, 1])
    assert np.isfinite(grad(logits)).all()


def test_chunk_read_equals_attention_over_projected_rows():
    """The raw-row read (projections moved to the query and value side) equals attention
    over keys and values projected from every stored row plus its slot encoding, and
    reads exactly zero where no chunk has weight."""
    rng = np.random.default_rng(0)
    n, c, h, d, f = 3, 4, 2, 5, 6
    q, rows, weights = rng.normal(size=(2, h, d)), rng.normal(size=(2, n, c, f)), rng.random((2, n))
    weights[1] = 0.0
    wk, wv, positions = rng.normal(size=(f, h, d)), rng.normal(size=(f, h, d)), rng.normal(size=(c, f))
    bk, bv = rng.normal(size=(h, d)), rng.normal(size=(h, d))
    stored = rows + positions
    keys, values = stored @ wk.reshape(f, -1), stored @ wv.reshape(f, -1)
    keys, values = (a.reshape(2, n, c, h, d) + b for a, b in ((keys, bk), (values, bv)))
    probs = jax.nn.softmax(np.einsum("bhd,bnchd->bnhc", q, keys) / np.sqrt(d), -1)
    expected = np.einsum("bn,bnhc,bnchd->bhd", weights, probs, values)
    got = chunk_read(*(jnp.asarray(a, jnp.float32) for a in (q, rows, weights)),
                     (jnp.asarray(wk), jnp.asarray(bk)), (jnp.asarray(wv), jnp.asarray(bv)),
                     jnp.asarray(positions, jnp.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (np.asarray(got[1]) == 0).all()


def test_top_k_covering_every_chunk_equals_top_k_zero(params, data):
    y_all, _ = jitted("all")[0](params, *data)
    y_three, _ = jitted("all3")[0](params, *data)
    np.testing.assert_allclose(y_three, y_all, atol=1e-5)


def test_gathered_and_dense_reads_agree_in_outputs_and_gradients(params, data, stepped):
    u, reset = data
    state = jax.tree.map(lambda x: x[-1], stepped["base"][1])  # a start with stored chunks
    gathered = make_core("base")
    dense = gathered.clone(read="dense")
    loss = lambda core: lambda p, x: (core.apply(p, x, reset, state)[0] ** 2).sum()
    grads = [jax.jit(jax.grad(loss(core), argnums=(0, 1)))(params, u) for core in (dense, gathered)]
    # float32 gradients reach several hundred here: both reads sum the same terms in other orders.
    assert_trees_close(grads[0], grads[1], atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(dense.apply)(params, u, reset)[0], jitted("base")[0](params, u, reset)[0],
                               atol=1e-5)
    # auto gathers from T >= 4 top_k C; top_k 0 always reads densely.
    assert gathers("auto", 2, 4, 32) and not gathers("auto", 2, 4, 31)
    assert not gathers("auto", 0, 4, 1024) and not gathers("gather", 0, 4, 8)
    with pytest.raises(ValueError, match="auto"):
        gathers("sparse", 2, 4, 32)


@pytest.mark.parametrize("name", ["all", "base"])
def test_gradients_skip_stored_chunks(params, data, name):
    """y at row 1, step 16 reads chunks 1-3 (steps 4-15) with top_k 0 (2 of them with
    top_k 2, gathered); two layers of local attention reach back to step 8 only.
    Contents and keys are stop-gradient'd, so steps 0-7 get no gradient; the chunk
    logits' projections do."""
    u, reset = data
    core = make_core(name)
    loss = lambda p, x: core.apply(p, x, reset)[0][16, 1].sum()
    grad_params, grad_u = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, u)
    grad_u = np.abs(np.asarray(grad_u)).sum(-1)
    assert (grad_u[:8, 1] == 0).all() and (grad_u[17:] == 0).all() and (grad_u[:, 0] == 0).all()
    assert (grad_u[8:17, 1] > 0).all()
    for block in ("blocks_0", "blocks_1"):
        for name in ("mem_query", "mem_key"):
            assert np.abs(grad_params["params"][block][name]["kernel"]).max() > 0


def test_params_serialization_round_trip(params, data):
    restored = flax.serialization.from_bytes(jax.tree.map(jnp.zeros_like, params),
                                             flax.serialization.to_bytes(params))
    y, _ = jitted("base")[0](params, *data)
    y_restored, _ = jitted("base")[0](restored, *data)
    np.testing.assert_array_equal(y_restored, y)


def test_imagined_steps_move_only_the_short_range_window(params, data):
    """remember=False (imagination): memory and the chunk being filled stay as they were;
    the window and the episode step (the clock) move on exactly as when remembering."""
    core = make_core("base")
    sequence, _, state_at = jitted("base")
    u, reset = data
    _, trace = sequence(params, u, reset)
    start = state_at(params, trace, jnp.array([T - 1, 13]), jnp.array([0, 1]))
    step = jax.jit(lambda state, x, remember: core.apply(
        params, x, jnp.zeros((2,), bool), state, remember, method=HCAMCore.step), static_argnums=2)
    # Until remembering completes a chunk (and reads it the step after), both read the
    # same memory at the same episode step: equal outputs.
    same_until = C - 1 - np.asarray(start["step"]) % C
    imagined, remembered = start, start
    for i in range(C + 1):  # long enough that remembering would complete a chunk
        x = jax.random.normal(jax.random.key(10 + i), (2, H))
        (y_imag, imagined), (y_mem, remembered) = step(imagined, x, False), step(remembered, x, True)
        rows = i <= same_until
        np.testing.assert_allclose(y_imag[rows], y_mem[rows], atol=1e-5)
    np.testing.assert_array_equal(imagined["step"], start["step"] + C + 1)  # the clock runs
    for key in ("slot", "valid"):
        np.testing.assert_array_equal(imagined[key], start[key])
    assert not np.array_equal(remembered["slot"], start["slot"])  # remembering wrote a chunk
    for new, old in zip(imagined["layers"], start["layers"]):
        for key in ("contents", "keys", "accum"):
            np.testing.assert_array_equal(new[key], old[key])
    # The first layer's rows are its normed inputs, the same in both modes.
    np.testing.assert_allclose(imagined["layers"][0]["window"], remembered["layers"][0]["window"],
                               atol=1e-5)
    assert not np.allclose(imagined["layers"][0]["window"], start["layers"][0]["window"])


@pytest.mark.parametrize("name", ["base", "all"])
def test_a_frozen_state_imagines_exactly_as_the_plain_one(params, data, name):
    """freeze() precomputes the memory's and window's projections for imagined steps: the
    outputs and states equal those of the plain state (top_k 2 and 0), also after a reset
    (which only masks), and remembering drops the projections, since writes make them stale."""
    core = make_core(name)
    sequence, _, state_at = jitted(name)
    u, reset = data
    _, trace = sequence(params, u, reset)
    start = state_at(params, trace, jnp.array([T - 1, 13]), jnp.array([0, 1]))
    step = jax.jit(lambda state, x, reset, remember: core.apply(
        params, x, reset, state, remember, method=HCAMCore.step), static_argnums=3)
    frozen = jax.jit(lambda state: core.apply(params, state, method=HCAMCore.freeze))(start)
    plain = start
    for i in range(C + 2):
        x = jax.random.normal(jax.random.key(20 + i), (2, H))
        at_reset = jnp.array([False, i == 2])
        (y_plain, plain), (y_frozen, frozen) = step(plain, x, at_reset, False), step(frozen, x, at_reset, False)
        np.testing.assert_allclose(y_frozen, y_plain, rtol=1e-5, atol=1e-5)
    assert_trees_close({k: v for k, v in frozen.items() if k != "frozen"}, plain, atol=1e-5)
    window_k = jax.jit(lambda w: core.apply(params, w, method=lambda m, w: m.blocks[1].local_k(w)))
    np.testing.assert_allclose(frozen["frozen"][1]["window_k"], window_k(plain["layers"][1]["window"]),
                               rtol=1e-5, atol=1e-5)
    assert "frozen" not in step(frozen, x, jnp.zeros(2, bool), True)[1]


def test_the_episode_clock_starts_at_zero_and_times_episode_steps(init_params, params, data):
    """At initialisation the clock adds nothing (outputs equal a core without it); with a
    learned clock, equal inputs at different episode steps give different outputs."""
    u, reset = data
    plain = HCAMCore(features=H, n_layers=2, chunk=C, heads=2, width=8, max_chunks=M,
                     time_encoding=False, **CONFIGS["base"])
    without = {"params": {k: v for k, v in init_params["params"].items() if k != "clock"}}
    y_plain, _ = jax.jit(plain.apply)(without, u, reset)
    y_init, _ = jitted("base")[0](init_params, u, reset)
    np.testing.assert_allclose(y_init, y_plain, atol=1e-6)
    # The same input at every step of a new episode: memory stays empty (no chunk
    # completes before step C), so only the clock can tell steps 0..C-1 apart.
    same = jnp.broadcast_to(u[:1], (C, B, H))
    starts = jnp.zeros((C, B), bool).at[0].set(True)
    y_timed, _ = jitted("base")[0](params, same, starts)
    y_untimed, _ = jax.jit(plain.apply)(without, same, starts)
    assert np.abs(np.diff(np.asarray(y_timed), axis=0)).max() > 1e-3
    assert np.abs(np.diff(np.asarray(y_untimed)[:2], axis=0)).max() < 1e-5  # step 0 = step 1


def test_an_all_zero_input_step_does_not_blow_up_the_input_gradient(init_params, data):
    """The world model's core input is exactly zero at an episode start, and at init the
    residual stream stays zero through every block there, so each of the 2 x n_layers
    LayerNorms multiplies the gradient by 1/sqrt(eps): (1/sqrt(1e-3))^4 ~ 1e6 with eps 1e-3,
    1e12 with flax's default 1e-6 (which sent the first world-model gradients to ~1e8)."""
    u, reset = data
    zeroed = u.at[jnp.asarray(reset)].set(0.0)
    sequence = jitted("base")[0]
    grad = jax.grad(lambda x: sequence(init_params, x, reset)[0].sum())(zeroed)
    at_starts = np.abs(np.asarray(grad)[np.asarray(reset)]).max()
    elsewhere = np.abs(np.asarray(grad)[~np.asarray(reset)]).max()
    assert at_starts < 1e6 * elsewhere, (at_starts, elsewhere)


def test_offset_keys_change_the_local_attention_and_sequence_still_equals_the_step_loop(params, data):
    """`local_positions` adds a projected key for each offset 0..C to the local path: its
    outputs differ from the same weights without them, and training's blocked sequence form
    still equals acting's step loop across resets."""
    u, reset = data
    core = HCAMCore(features=H, n_layers=2, chunk=C, heads=2, width=8, max_chunks=M, local_positions=True,
                    **CONFIGS["base"])
    with_keys = jax.jit(core.init)(jax.random.key(4), u, reset)
    kernel = with_keys["params"]["blocks_0"]["local_pos"]["kernel"]
    assert kernel.shape == (32, 2, 4)  # sinusoidal features x heads x head width
    # The shared parameters plus the new offset keys.
    merged = {"params": {**params["params"], **{
        name: {**params["params"][name], "local_pos": with_keys["params"][name]["local_pos"]}
        for name in ("blocks_0", "blocks_1")}}}
    y, _ = jax.jit(core.apply)(merged, u, reset)

    def body(state, inputs):
        out, state = core.apply(merged, *inputs, state, method=HCAMCore.step)
        return state, out
    _, y_steps = jax.jit(lambda: jax.lax.scan(body, core.initial_state((B,)), (u, reset)))()
    np.testing.assert_allclose(y, y_steps, atol=1e-5)
    y_plain, _ = jitted("base")[0](params, u, reset)
    assert np.abs(np.asarray(y) - np.asarray(y_plain)).max() > 1e-2
