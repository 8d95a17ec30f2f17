"""Errors a user of the replay buffer can cause, one class per kind of mistake."""


class ReplayError(Exception):
    """Base class: every error the replay raises on purpose."""


class ReplayConfigError(ReplayError, ValueError):
    """A constructor argument is invalid or disagrees with the directory's stored settings."""


class ReplayStepError(ReplayError, ValueError):
    """A step passed to `add` has the wrong keys, shapes or dtypes."""


class ReplayNotReadyError(ReplayError):
    """`sample` was called before any stored window of the requested length exists."""


class ReplayForeignDirectoryError(ReplayError):
    """The directory (or lfs_dir) holds files that are not a replay buffer."""


class ReplayCorruptError(ReplayError):
    """A metadata file is truncated, fails its checksum or contradicts the stored arrays."""


class ReplayDiskFullError(ReplayError, OSError):
    """A write ran out of space; everything committed before it stays readable."""


class ReplayLockedError(ReplayError):
    """Another live process has the directory open."""


class ReplayClosedError(ReplayError):
    """The replay was used after `close()`."""
