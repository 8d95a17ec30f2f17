"""The step spec: which keys a step has and each key's dtype and per-step shape.

Fixed by the first `add`; every later step is checked against it so that a wrong
key, shape or dtype fails at `add` time with a message naming it.
"""

import re
from dataclasses import dataclass

import numpy as np

from replay.errors import ReplayConfigError, ReplayCorruptError, ReplayStepError

# Keys become zarr array names; zarr reserves a leading "__" and "/" nests groups.
KEY_PATTERN = re.compile(r"^(?!__)[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
ALLOWED_KINDS = "biuf"  # bool, signed int, unsigned int, float


@dataclass(frozen=True)
class Field:
    """One key: numpy dtype and the shape of a single step (() for scalars)."""

    dtype: np.dtype
    shape: tuple

    @property
    def step_bytes(self) -> int:
        return int(self.dtype.itemsize * np.prod(self.shape, dtype=np.int64))


class Spec:
    """Ordered mapping key -> Field with validation of incoming steps."""

    def __init__(self, fields: dict):
        self.fields = dict(fields)
        self.keys = tuple(self.fields)
        self._keyset = frozenset(self.keys)

    @classmethod
    def from_step(cls, step) -> "Spec":
        """Spec taken from the first step: dtypes and shapes as given."""
        if not isinstance(step, dict) or not step:
            raise ReplayStepError(
                f"a step must be a non-empty dict of arrays or scalars, got {type(step).__name__}"
            )
        fields = {}
        for key, value in step.items():
            check_key(key)
            array = np.asarray(value)
            if array.dtype.kind not in ALLOWED_KINDS:
                raise ReplayStepError(
                    f"step[{key!r}] has dtype {array.dtype}; allowed: bool, integer or float "
                    "arrays and scalars"
                )
            fields[key] = Field(array.dtype, array.shape)
        return cls(fields)

    @classmethod
    def from_layout(cls, layout) -> "Spec":
        """Spec declared by a caller: dict key -> (per-step shape, dtype), the form of
        `Replay.spec`. Raises ReplayConfigError for anything a first step could not be."""
        if not isinstance(layout, dict) or not layout:
            raise ReplayConfigError(
                f"spec must be a non-empty dict key -> (shape, dtype), got {layout!r}"
            )
        fields = {}
        for key, entry in layout.items():
            try:
                check_key(key)
                shape, dtype = entry
                field = Field(np.dtype(dtype), tuple(int(n) for n in shape))
            except (ReplayStepError, TypeError, ValueError) as error:
                raise ReplayConfigError(
                    f"spec[{key!r}] = {entry!r} is not a (shape, dtype) pair of a storable key "
                    f"({error})"
                ) from error
            if field.dtype.kind not in ALLOWED_KINDS or any(n < 0 for n in field.shape):
                raise ReplayConfigError(
                    f"spec[{key!r}] = {entry!r}: dtype must be bool, integer or float and the "
                    "shape non-negative"
                )
            fields[key] = field
        return cls(fields)

    def to_layout(self) -> dict:
        """dict key -> (per-step shape, dtype), the inverse of from_layout."""
        return {key: (f.shape, f.dtype) for key, f in self.fields.items()}

    def check(self, step) -> list:
        """Validate one step against the spec; returns its values in key order."""
        if not isinstance(step, dict):
            raise ReplayStepError(f"a step must be a dict, got {type(step).__name__}")
        if step.keys() != self._keyset:
            missing = sorted(self._keyset - step.keys())
            extra = sorted(set(step) - self._keyset)
            raise ReplayStepError(
                f"step keys differ from the first step's: missing {missing}, unexpected {extra}; "
                f"every step must have exactly {list(self.keys)}"
            )
        values = []
        for key, field in self.fields.items():
            value = step[key]
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if array.shape != field.shape:
                raise ReplayStepError(
                    f"step[{key!r}] has shape {array.shape}; the first step fixed it to {field.shape}"
                )
            if array.dtype != field.dtype and not np.can_cast(array.dtype, field.dtype, "same_kind"):
                raise ReplayStepError(
                    f"step[{key!r}] has dtype {array.dtype}, which does not cast to the stored "
                    f"{field.dtype}; pass {field.dtype} or a value of the same kind"
                )
            values.append(array)
        return values

    def to_json(self) -> dict:
        return {key: {"dtype": f.dtype.str, "shape": list(f.shape)} for key, f in self.fields.items()}

    @classmethod
    def from_json(cls, data, source) -> "Spec":
        """Parse the stored spec; `source` names the file for error messages."""
        try:
            fields = {
                key: Field(np.dtype(entry["dtype"]), tuple(int(n) for n in entry["shape"]))
                for key, entry in data.items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ReplayCorruptError(f"{source}: unreadable step spec ({error})") from error
        for key in fields:
            check_key(key)
        return cls(fields)

    def __eq__(self, other):
        return isinstance(other, Spec) and self.fields == other.fields


def check_key(key):
    if not isinstance(key, str) or not KEY_PATTERN.match(key) or key == "zarr.json":
        raise ReplayStepError(
            f"step key {key!r} is not allowed; keys are strings of letters, digits, '_', '.', '-' "
            "not starting with '.', '-' or '__'"
        )
