"""HiPPO-LegS initialisation of a diagonal complex state-space layer.

The normal part S of HiPPO-LegS (A plus a rank-one term) has diagonal -1/2 and a
skew-symmetric rest, so S = V diag(Lambda) V^H with unitary V and
Re(Lambda) = -1/2. The layer lives in V's eigenbasis: B~ = V^H B, C~ = C V.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def hippo_legs(n):
    """HiPPO-LegS state matrix A, (n, n) float64 (already negated: stable)."""
    scale = np.sqrt(2 * np.arange(n) + 1.0)
    lower = np.tril(np.outer(scale, scale), k=-1)
    return -(lower + np.diag(np.arange(n) + 1.0))


def hippo_legs_normal(n):
    """Normal part S = A + p p^T of HiPPO-LegS with p_k = sqrt(k + 1/2), (n, n)."""
    p = np.sqrt(np.arange(n) + 0.5)
    return hippo_legs(n) + np.outer(p, p)


def hippo_normal_eig(n):
    """Eigen-decomposition of the HiPPO-LegS normal part.

    Returns:
      Lambda: (n,) complex128 eigenvalues, real part exactly -1/2, sorted by
        imaginary part (negative half first, conjugates mirrored).
      V: (n, n) complex128 unitary eigenvectors (columns), S = V diag(Lambda) V^H.
    """
    s = hippo_legs_normal(n)
    real = np.mean(np.diag(s))
    # The skew part times -i is Hermitian: eigh gives real frequencies and unitary V.
    freq, v = np.linalg.eigh(-1j * (s - real * np.eye(n)))
    return real + 1j * freq, v


@functools.lru_cache(maxsize=None)
def hippo_init(state_size, n_blocks=1, conj_sym=False):
    """Block-diagonal HiPPO-N eigenvalues and eigenbasis of a layer.

    Args:
      state_size: P, the full number of complex states (divisible by n_blocks;
        each block even with conj_sym).
      n_blocks: number of independent HiPPO blocks of size P / n_blocks.
      conj_sym: keep one eigenvalue of each conjugate pair (P/2 states).

    Returns:
      Lambda: (P_eff,) complex128, P_eff = P or P/2 with conj_sym.
      V: (P, P_eff) complex128 block-diagonal eigenvectors of the kept states.
    """
    if state_size < 1 or n_blocks < 1 or state_size % n_blocks:
        raise ValueError(
            f"state_size ({state_size}) must be a positive multiple of "
            f"n_blocks ({n_blocks})")
    block = state_size // n_blocks
    if conj_sym and block % 2:
        raise ValueError(
            f"conj_sym needs an even block size, got state_size / n_blocks = {block}")
    lam, v = hippo_normal_eig(block)
    if conj_sym:
        # eigh sorts frequencies, so the first half holds one of each conjugate pair.
        lam, v = lam[: block // 2], v[:, : block // 2]
    lam_all = np.tile(lam, n_blocks)
    v_all = np.zeros((state_size, lam.size * n_blocks), complex)
    for i in range(n_blocks):
        v_all[i * block:(i + 1) * block, i * lam.size:(i + 1) * lam.size] = v
    # Cached and shared between callers: make the arrays read-only.
    lam_all.flags.writeable = False
    v_all.flags.writeable = False
    return lam_all, v_all


def init_input_matrix(key, v, width):
    """B~ = V^H B, B (P, H) from jax's lecun_normal (fan-in axis -2, as in S5).

    Returns (P_eff, H, 2) float32 [real, imag]."""
    b = jax.nn.initializers.lecun_normal()(key, (v.shape[0], width))
    return _as_real_pair(jnp.asarray(v.conj().T, jnp.complex64) @ b)


def init_output_matrix(key, v, width):
    """C~ = C V with C (H, P) lecun-normal (fan-in P); returns (H, P_eff, 2) float32."""
    c = jax.random.normal(key, (width, v.shape[0])) / np.sqrt(v.shape[0])
    return _as_real_pair(c @ jnp.asarray(v, jnp.complex64))


def init_log_step(key, size, dt_min, dt_max):
    """log step sizes ~ U[log dt_min, log dt_max], (size,) float32."""
    return jax.random.uniform(key, (size,), jnp.float32, np.log(dt_min), np.log(dt_max))


def _as_real_pair(z):
    # Parameters stay real so optimisers and weight decay never see complex leaves.
    return jnp.stack([z.real, z.imag], axis=-1).astype(jnp.float32)
