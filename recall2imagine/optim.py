"""Optimisers: Adam with global-norm clipping, decoupled weight decay and warmup.

The world model's SSM parameters (S5 Lambda, B, C, D, log_step) form their own group
with `ssm_opt.lr` and `ssm_opt.wd`; clipping is over all gradients together.
"""

import jax
import optax

SSM_PARAM_NAMES = frozenset({"Lambda_re", "Lambda_im", "B", "C", "D", "log_step"})


def _leaf_name(path):
    return getattr(path[-1], "key", str(path[-1]))


def ssm_labels(params):
    """Pytree of "ssm" / "default" labels: S5 parameters go to the SSM group."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "ssm" if _leaf_name(path) in SSM_PARAM_NAMES else "default", params)


def kernel_mask(params):
    """Weight decay applies to dense and conv kernels only (not biases or norms)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "kernel",
                                            params)


def _schedule(lr, warmup):
    return optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else lr


def _group(lr, eps, wd, warmup, mask):
    decay = [optax.add_decayed_weights(wd, mask)] if wd else []
    return optax.chain(optax.scale_by_adam(eps=eps), *decay,
                       optax.scale_by_learning_rate(_schedule(lr, warmup)))


def make_optimizer(opt, ssm_opt=None):
    """optax transformation from an `*_opt` config (lr, eps, clip, wd, warmup).

    With ``ssm_opt`` (lr, wd), SSM parameters get that learning rate and weight decay
    (applied to all of them) and the same eps, warmup and clipping.
    """
    main = _group(opt.lr, opt.eps, opt.wd, opt.warmup, kernel_mask)
    if ssm_opt is not None:
        ssm_group = _group(ssm_opt.lr, opt.eps, ssm_opt.wd, opt.warmup, None)
        main = optax.multi_transform({"default": main, "ssm": ssm_group}, ssm_labels)
    return optax.chain(optax.clip_by_global_norm(opt.clip), main)
