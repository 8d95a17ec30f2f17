"""Networks and distributions: values against NumPy references, shapes, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recall2imagine import nets
from recall2imagine.gru import GRUCore


def test_symlog_symexp_are_inverse_and_compress():
    x = jnp.array([-1e4, -3.0, -0.5, 0.0, 0.5, 3.0, 1e4])
    np.testing.assert_allclose(nets.symexp(nets.symlog(x)), x, rtol=1e-5)
    np.testing.assert_allclose(nets.symlog(x), np.sign(x) * np.log(1 + np.abs(x)), rtol=1e-6)


def test_onehot_unimix_mixes_uniform_and_sums_to_one():
    logits = jnp.array([[10.0, 0.0, -10.0, 0.0]])
    dist = nets.OneHotDist(logits, unimix=0.01)
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(dist.probs, 0.99 * softmax + 0.01 / 4, rtol=1e-5)
    np.testing.assert_allclose(dist.probs.sum(-1), 1.0, rtol=1e-6)


def test_onehot_sample_is_onehot_with_straight_through_gradient():
    logits = jnp.array([[0.3, -0.2, 0.1], [1.0, 2.0, -1.0]])
    sample = nets.OneHotDist(logits).sample(jax.random.PRNGKey(0))
    np.testing.assert_allclose(sample.sum(-1), 1.0, atol=1e-6)
    assert set(np.round(np.asarray(sample), 5).ravel()) <= {0.0, 1.0}
    # Straight-through: d sample / d logits = d probs / d logits, not zero.
    grad = jax.grad(lambda l: (nets.OneHotDist(l).sample(jax.random.PRNGKey(0))
                               * jnp.arange(3.0)).sum())(logits)
    probs_grad = jax.grad(lambda l: (jax.nn.softmax(l) * jnp.arange(3.0)).sum())(logits)
    np.testing.assert_allclose(grad, probs_grad, rtol=1e-5)


def test_onehot_kl_entropy_logprob_match_numpy_with_event_dims():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 3, 4)).astype(np.float32)
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    dp, dq = nets.OneHotDist(a, event_dims=1), nets.OneHotDist(b, event_dims=1)
    np.testing.assert_allclose(dp.kl(dq), (p * np.log(p / q)).sum((-1, -2)), rtol=1e-5)
    np.testing.assert_allclose(dp.entropy(), -(p * np.log(p)).sum((-1, -2)), rtol=1e-5)
    x = np.eye(4)[rng.integers(0, 4, (5, 3))]
    np.testing.assert_allclose(dp.log_prob(x), (x * np.log(p)).sum((-1, -2)), rtol=1e-5)


def test_twohot_encoding_interpolates_between_neighbouring_bins():
    bins = jnp.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    target = nets.twohot_encode(jnp.array([0.25, -1.0, 5.0, -5.0]), bins)
    np.testing.assert_allclose(target[0], [0, 0, 0.75, 0.25, 0], atol=1e-6)
    np.testing.assert_allclose(target[1], [0, 1, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(target[2], [0, 0, 0, 0, 1], atol=1e-6)  # clipped to the edge
    np.testing.assert_allclose(target[3], [1, 0, 0, 0, 0], atol=1e-6)
    # Encoding then taking the mean in symlog space recovers the value.
    x = jnp.array([0.37, -1.6])
    np.testing.assert_allclose((nets.twohot_encode(x, bins) * bins).sum(-1), x, rtol=1e-5)


def test_twohot_mean_is_symexp_of_expected_bin_and_zero_logits_mean_zero():
    logits = jnp.zeros((3, 255))
    np.testing.assert_allclose(nets.TwoHotDist(logits).mean(), 0.0, atol=1e-4)
    onehot = jnp.full((255,), -1e9).at[200].set(0.0)
    bin_value = np.linspace(-20, 20, 255)[200]
    np.testing.assert_allclose(nets.TwoHotDist(onehot).mean(), np.sign(bin_value)
                               * np.expm1(abs(bin_value)), rtol=1e-4)
    # log_prob is highest for the value the logits were fitted to.
    logits = jnp.log(nets.twohot_encode(nets.symlog(jnp.array(7.0)), nets.twohot_bins(255)) + 1e-8)
    dist = nets.TwoHotDist(logits)
    assert dist.log_prob(jnp.array(7.0)) > dist.log_prob(jnp.array(6.0))
    np.testing.assert_allclose(dist.mean(), 7.0, rtol=1e-3)


def test_twohot_bin_limit_sets_the_range_and_separates_small_rewards():
    bins = nets.twohot_bins(255, 1.0)
    np.testing.assert_allclose([bins[0], bins[-1]], [-1.0, 1.0])
    onehot = jnp.full((255,), -1e9).at[-1].set(0.0)
    np.testing.assert_allclose(nets.TwoHotDist(onehot, 1.0).mean(), np.expm1(1.0), rtol=1e-4)
    # RepeatPrevious pays +-1/48 a step: over [-20, 20] both signs put ~90% of their weight
    # on the zero bin; over [-1, 1] they share no bin.
    small = nets.symlog(jnp.array([1 / 48, -1 / 48]))
    shared = lambda limit: float(jnp.minimum(*nets.twohot_encode(small, nets.twohot_bins(255, limit))).sum())
    assert shared(20.0) > 0.85
    assert shared(1.0) == 0.0
    head = nets.Head("twohot", 1, 8, bins=15, bin_limit=1.0)
    x = jnp.ones((2, 4))
    dist = head.apply(head.init(jax.random.PRNGKey(0), x), x)
    np.testing.assert_allclose(dist.bins, np.linspace(-1, 1, 15), atol=1e-6)


def test_bernoulli_and_normal_match_closed_forms():
    logits = jnp.array([-2.0, 0.5])
    dist = nets.BernoulliDist(logits)
    p = 1 / (1 + np.exp(-np.asarray(logits)))
    np.testing.assert_allclose(dist.log_prob(jnp.array([1.0, 0.0])),
                               [np.log(p[0]), np.log(1 - p[1])], rtol=1e-5)
    np.testing.assert_allclose(dist.mode(), [0.0, 1.0])
    mean, std = jnp.array([[0.5, -0.2]]), jnp.array([[0.3, 2.0]])
    normal = nets.NormalDist(mean, std)
    x = jnp.array([[0.1, 1.0]])
    ref = (-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(normal.log_prob(x), ref, rtol=1e-5)
    entropy = (0.5 * np.log(2 * np.pi * np.e * std ** 2)).sum(-1)
    np.testing.assert_allclose(normal.entropy(), entropy, rtol=1e-5)


def test_heads_zero_outscale_gives_zero_output_and_normal_std_in_bounds():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
    head = nets.Head("twohot", 1, 8, bins=15, outscale=0.0)
    mean = jax.jit(lambda x: head.apply(head.init(jax.random.PRNGKey(1), x), x).mean())(x)
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)
    actor = nets.Head("normal", 1, 8, size=3, minstd=0.1, maxstd=1.0)
    loc, std = jax.jit(lambda x: (lambda d: (d.loc, d.std))(
        actor.apply(actor.init(jax.random.PRNGKey(2), x), x)))(100 * x)
    assert loc.shape == (4, 3) and np.all(np.abs(loc) <= 1.0)
    assert np.all((std >= 0.1) & (std <= 1.0))


def test_encoder_decoder_shapes_and_key_selection():
    shapes = {"image": (16, 16, 3), "vector": (5,), "scalar": ()}
    cnn, mlp = nets.select_keys(shapes, ".*", ".*")
    assert cnn == (("image", (16, 16, 3)),)
    assert mlp == (("scalar", ()), ("vector", (5,)))
    assert nets.select_keys(shapes, "$^", "vec") == ((), (("vector", (5,)),))
    obs = {"image": jnp.zeros((2, 3, 16, 16, 3), jnp.uint8), "vector": jnp.ones((2, 3, 5)),
           "scalar": jnp.ones((2, 3))}
    enc = nets.Encoder(cnn, mlp, mlp_layers=1, mlp_units=8, cnn_depth=4, minres=4)
    # Jitted: op-by-op initialisation compiles every small op separately.
    embed, _ = jax.jit(enc.init_with_output)(jax.random.PRNGKey(0), obs)
    assert embed.shape == (2, 3, 8 * 4 * 4 + 8)  # 2 stages: depth 4 -> 8 at 4x4, + MLP
    dec = nets.Decoder(cnn, mlp, mlp_layers=1, mlp_units=8, cnn_depth=4, minres=4)
    out, _ = jax.jit(dec.init_with_output)(jax.random.PRNGKey(1), embed)
    assert {k: v.shape for k, v in out.items()} == {
        "image": (2, 3, 16, 16, 3), "vector": (2, 3, 5), "scalar": (2, 3)}
    with pytest.raises(ValueError, match="minres"):
        jax.eval_shape(nets.Encoder((("image", (12, 12, 3)),), (), 1, 8, 4, minres=4).init,
                       jax.random.PRNGKey(0), {"image": jnp.zeros((1, 12, 12, 3), jnp.uint8)})


def test_gru_resets_to_initial_state_and_keeps_state_otherwise():
    gru = GRUCore(deter=6)
    u, state = jnp.ones((3, 4)), jnp.full((3, 6), 0.7)
    params = jax.jit(gru.init, static_argnames="method")(
        jax.random.PRNGKey(0), u, jnp.zeros(3, bool), state, method=GRUCore.step)
    step = jax.jit(lambda reset, state: gru.apply(params, u, reset, state, method=GRUCore.step))
    y, new = step(jnp.array([True, False, True]), state)
    fresh, _ = step(jnp.zeros(3, bool), jnp.zeros((3, 6)))
    np.testing.assert_allclose(y, new)
    np.testing.assert_allclose(new[0], fresh[0], rtol=1e-6)  # learned initial = 0 at init
    assert not np.allclose(new[1], fresh[1])


def test_binary_head_output_layer_has_no_unit_axes_and_is_affine():
    # No (1,)-shaped parameter: XLA's GPU compiler rejects train steps whose gradients hold one.
    head = nets.Head("binary", 1, 8, norm="none")
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 6))
    params = head.init(jax.random.PRNGKey(0), x)
    out = params["params"]["out"]
    assert out["kernel"].shape == (8,) and out["bias"].shape == ()
    assert all(1 not in leaf.shape for leaf in jax.tree.leaves(params))
    features = nets.MLP(1, 8, norm="none").apply({"params": params["params"]["MLP_0"]}, x)
    params["params"]["out"]["bias"] = jnp.array(0.25)
    logits = head.apply(params, x).logits
    assert logits.shape == (3, 5)
    np.testing.assert_allclose(logits, features @ out["kernel"] + 0.25, rtol=1e-5, atol=1e-6)


def test_uniform_cross_entropy_reads_the_logits_before_unimix_and_keeps_its_gradient():
    logits = jnp.array([[12.0, 0.0, -3.0, 1.0]])
    raw = np.asarray(jax.nn.softmax(logits))
    dist = nets.OneHotDist(logits, unimix=0.01)
    np.testing.assert_allclose(dist.uniform_cross_entropy(), -np.log(raw).mean(-1), rtol=1e-5)
    np.testing.assert_allclose(nets.OneHotDist(jnp.zeros((1, 4)), 0.01).uniform_cross_entropy(),
                               np.log(4.0), rtol=1e-6)
    # Near a ruled-out class the entropy's gradient vanishes; the cross-entropy's is p - 1/K.
    ce_grad = jax.grad(lambda l: nets.OneHotDist(l, 0.01).uniform_cross_entropy().sum())(logits)
    ent_grad = jax.grad(lambda l: nets.OneHotDist(l, 0.01).entropy().sum())(logits)
    np.testing.assert_allclose(ce_grad, raw - 0.25, atol=1e-6)
    assert abs(float(ce_grad[0, 2])) > 0.24 and abs(float(ent_grad[0, 2])) < 1e-3
