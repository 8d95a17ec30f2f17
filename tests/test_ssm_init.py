"""HiPPO-LegS initialisation and ZOH / bilinear discretisation."""

import cmath

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ssm
from ssm.init import init_input_matrix, init_output_matrix


def test_legs_normal_part_is_normal_with_diagonal_minus_half():
    s = ssm.hippo_legs_normal(16)
    np.testing.assert_allclose(s @ s.T, s.T @ s, atol=1e-9)
    np.testing.assert_allclose(s + s.T, -np.eye(16), atol=1e-12)
    a = ssm.hippo_legs(16)
    assert np.all(np.triu(a, k=1) == 0) and np.all(np.diag(a) == -np.arange(1, 17))


def test_eigendecomposition_has_real_part_minus_half_and_unitary_basis():
    lam, v = ssm.hippo_normal_eig(16)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(16), atol=1e-10)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, ssm.hippo_legs_normal(16),
                               atol=1e-10)
    # Frequencies come in +- pairs, so the spectrum is closed under conjugation.
    np.testing.assert_allclose(np.sort(lam.imag), np.sort(-lam.imag), atol=1e-10)


@pytest.mark.parametrize("n_blocks", [1, 4])
def test_block_diagonal_init_repeats_each_block_and_keeps_real_part(n_blocks):
    lam, v = ssm.hippo_init(32, n_blocks)
    block = 32 // n_blocks
    assert lam.shape == (32,) and v.shape == (32, 32)
    np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
    np.testing.assert_allclose(lam, np.tile(lam[:block], n_blocks))
    assert np.all(v[:block, block:] == 0)
    np.testing.assert_allclose(v.conj().T @ v, np.eye(32), atol=1e-10)


def test_conjugate_symmetric_init_keeps_one_of_each_pair():
    lam_half, v_half = ssm.hippo_init(16, 2, conj_sym=True)
    assert lam_half.shape == (8,) and v_half.shape == (16, 8)
    # The dropped half are the conjugates: adding them back rebuilds each block.
    s = ssm.hippo_legs_normal(8)
    blocks = 2 * np.real(v_half @ np.diag(lam_half) @ v_half.conj().T)
    np.testing.assert_allclose(blocks[:8, :8], s, atol=1e-10)
    np.testing.assert_allclose(blocks[8:, 8:], s, atol=1e-10)
    with pytest.raises(ValueError, match="even"):
        ssm.hippo_init(6, 2, conj_sym=True)
    with pytest.raises(ValueError, match="multiple"):
        ssm.hippo_init(10, 4)


def test_rotated_input_and_output_matrices_are_real_in_the_original_basis():
    _, v = ssm.hippo_init(16, 2)
    b_tilde = np.asarray(init_input_matrix(jax.random.key(0), v, 5))
    c_tilde = np.asarray(init_output_matrix(jax.random.key(1), v, 5))
    b = v @ (b_tilde[..., 0] + 1j * b_tilde[..., 1])
    c = (c_tilde[..., 0] + 1j * c_tilde[..., 1]) @ v.conj().T
    assert np.abs(b.imag).max() < 1e-5 and np.abs(b.real).max() > 0.1
    assert np.abs(c.imag).max() < 1e-5 and np.abs(c.real).max() > 0.1


@pytest.mark.parametrize("discretize", [ssm.discretize_zoh, ssm.discretize_bilinear])
def test_discretised_eigenvalues_lie_inside_the_unit_circle(discretize):
    lam, _ = ssm.hippo_init(64, 4)
    lam = jnp.asarray(lam, jnp.complex64)
    for step in (1e-3, 1e-1, 1.0):
        lambda_bar, _ = discretize(lam, jnp.ones((64, 1), jnp.complex64),
                                   jnp.full((64,), step))
        assert np.all(np.abs(np.asarray(lambda_bar)) < 1.0), step


def test_zoh_and_bilinear_match_their_closed_forms_on_a_scalar():
    lam, b, dt = -0.5 + 3.0j, 0.7, 0.05
    zoh_lambda, zoh_b = ssm.discretize_zoh(jnp.array([lam]), jnp.array([[b]]), dt)
    assert abs(complex(zoh_lambda[0]) - cmath.exp(lam * dt)) < 1e-6
    assert abs(complex(zoh_b[0, 0]) - (cmath.exp(lam * dt) - 1) / lam * b) < 1e-6
    bil_lambda, bil_b = ssm.discretize_bilinear(jnp.array([lam]), jnp.array([[b]]), dt)
    assert abs(complex(bil_lambda[0]) - (1 + dt / 2 * lam) / (1 - dt / 2 * lam)) < 1e-6
    assert abs(complex(bil_b[0, 0]) - dt * b / (1 - dt / 2 * lam)) < 1e-6


@pytest.fixture(scope="module")
def layer_params():
    layer = ssm.S5Layer(state_size=32, n_blocks=2, dt_min=1e-3, dt_max=1e-1)
    return jax.jit(layer.init)(jax.random.key(0), jnp.zeros((3, 6)))


def test_layer_parameters_follow_the_initialisation_recipe(layer_params):
    params = layer_params["params"]
    lam, _ = ssm.hippo_init(32, 2)
    np.testing.assert_allclose(params["Lambda_re"], lam.real, atol=1e-6)
    np.testing.assert_allclose(params["Lambda_im"], lam.imag, atol=1e-5)
    log_step = np.asarray(params["log_step"])
    assert log_step.shape == (32,)
    assert np.all(log_step >= np.log(1e-3)) and np.all(log_step <= np.log(1e-1))
    assert np.ptp(log_step) > 1.0, "log_step must be spread over the range"
    assert params["B"].shape == (32, 6, 2) and params["C"].shape == (6, 32, 2)
    assert params["D"].shape == (6,) and np.std(params["D"]) > 0.2


@pytest.mark.parametrize("discretization", ["bilinear", "zoh"])
def test_eigenvalue_clipping_keeps_an_unstable_parameter_stable(
        layer_params, discretization):
    unstable = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, 0.3) if "Lambda_re" in jax.tree_util.keystr(path)
        else x, layer_params)
    for clip in (False, True):
        layer = ssm.S5Layer(32, n_blocks=2, discretization=discretization,
                            clip_eigs=clip)
        lambda_bar, *_ = layer.apply(unstable, 6, method=ssm.S5Layer.discrete_system)
        assert bool(np.all(np.abs(np.asarray(lambda_bar)) < 1.0)) == clip
    np.testing.assert_allclose(ssm.clip_eigenvalues(jnp.array([0.3, -0.5])),
                               [-1e-4, -0.5])
