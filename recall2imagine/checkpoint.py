"""Agent checkpoints with orbax: the agent state pytree plus JSON counters.

Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a kill mid-save leaves the previous checkpoints intact. If the newest one
cannot be read, the previous kept one is used; if none can, the error says so
instead of starting from scratch over existing data.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "CheckpointError", "tree_shapes", "unit_axes_apart"]


def unit_axes_apart(old, new) -> bool:
    """Whether two shapes differ only in axes of size 1, e.g. (16, 1) and (16,).

    A checkpoint whose leaves differ from this code's only so restores with a reshape: the binary
    head's output layer was a (F, 1) kernel and a (1,) bias before it became (F,) and ()."""
    squeeze = lambda shape: tuple(int(n) for n in shape if n != 1)  # noqa: E731
    return tuple(old) != tuple(new) and squeeze(old) == squeeze(new)


def _path_name(path) -> str:
    """A pytree path as "a/b/0"."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def tree_shapes(tree, prefix: str = "") -> dict:
    """{"a/b/0": (shape tuple, dtype name)} of a pytree's leaves that have .shape and .dtype
    (arrays, jax.ShapeDtypeStruct, orbax array metadata); paths below `prefix`."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        name = f"{prefix}/{_path_name(path)}" if prefix else _path_name(path)
        shapes[name] = (tuple(int(n) for n in leaf.shape), str(np.dtype(leaf.dtype)))
    return shapes


class CheckpointError(RuntimeError):
    """No readable checkpoint where one is expected."""


class Checkpointer:
    """Saves and restores `(state, meta)` under `directory/<step>/`.

    Args:
      directory: the checkpoint folder (`<logdir>/ckpt`).
      keep: how many checkpoints to keep (>= 2 gives a fallback if the newest is damaged).
    """

    def __init__(self, directory, keep: int = 2):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        # Named handlers let a fresh manager read an item's metadata before any save or restore.
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def steps(self) -> list[int]:
        """The saved checkpoints' steps, oldest first."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Writes `state` (pytree of arrays) and `meta` (JSON-able dict) as checkpoint `step`.

        A checkpoint already saved at `step` is replaced; the older kept ones stay as the fallback.
        """
        if int(step) in self.steps():
            self._manager.delete(int(step))
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self._manager.save(int(step), args=args, force=True)
        self._manager.wait_until_finished()

    def stored_params(self) -> dict | None:
        """tree_shapes of the newest readable checkpoint's state["params"] (paths start with
        "params/"), read from its metadata without loading arrays; None if there is none."""
        for step in reversed(self.steps()):
            try:
                metadata = self._manager.item_metadata(step)["state"]
            except Exception:  # noqa: BLE001 - unreadable metadata: restore() tries the previous checkpoint
                continue
            tree = getattr(metadata, "tree", metadata)
            if isinstance(tree, dict) and "params" in tree:
                return tree_shapes(tree["params"], "params")
        return None

    def restore(self, template):
        """Returns `(state, meta, step)` of the newest readable checkpoint, or None if there is none.

        `template` is a state pytree of the expected structure (e.g. a fresh `agent.init`).
        """
        steps = self.steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            try:
                stored = self._stored_shapes(step)
                legacy = jax.tree_util.tree_map_with_path(
                    lambda path, leaf: self._as_stored(path, leaf, stored), template)
                args = ocp.args.Composite(state=ocp.args.StandardRestore(legacy), meta=ocp.args.JsonRestore())
                restored = self._manager.restore(step, args=args)
                state = jax.tree.map(_reshaped, restored["state"], template)
                return state, dict(restored["meta"]), step
            except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous checkpoint
                errors.append(f"step {step}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise CheckpointError(
            f"No readable checkpoint in {self.directory} (tried {len(steps)}):\n  " + "\n  ".join(errors)
            + "\nThe replay and logs there are kept. Move or delete the damaged ckpt/ folder to start the agent"
            " afresh on this data, or use another --logdir."
        )

    def _stored_shapes(self, step) -> dict:
        """Leaf shapes of checkpoint `step`'s state from its metadata ({} if unreadable)."""
        try:
            metadata = self._manager.item_metadata(step)["state"]
        except Exception:  # noqa: BLE001 - the restore that follows reports what is wrong
            return {}
        return {path: shape for path, (shape, _) in tree_shapes(getattr(metadata, "tree", metadata)).items()}

    @staticmethod
    def _as_stored(path, leaf, stored):
        """`leaf`, or zeros of the stored shape where that differs only in axes of size 1."""
        old = stored.get(_path_name(path))
        if old is not None and unit_axes_apart(old, leaf.shape):
            return np.zeros(old, leaf.dtype)
        return leaf

    def close(self) -> None:
        self._manager.close()


def _reshaped(restored, template):
    """A restored leaf in the template's shape (and placement, where the template has one)."""
    if tuple(restored.shape) == tuple(template.shape):
        return restored
    reshaped = np.reshape(np.asarray(restored), template.shape)
    return jax.device_put(reshaped, template.sharding) if hasattr(template, "sharding") else reshaped
