"""Command-line entry point.

    python recall2imagine/train.py --configs popgym --task gym_popgym:popgym-RepeatPreviousEasy-v0 --logdir ./logs
    python -m recall2imagine.train --configs debug --print_config

Rerunning the same command with the same --logdir resumes the run.
"""

from __future__ import annotations

import pathlib
import sys

if __package__ in (None, ""):
    # Run as a script: import the checkout this file lives in, not its folder's modules.
    _here = pathlib.Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from recall2imagine.config import ConfigError, build_config, parse_cli, usage, validate  # noqa: E402


def main(argv=None) -> int:
    """Parses the command line, then prints the config or trains. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        names, overrides, flags = parse_cli(argv)
        if "help" in flags:
            print(usage())
            return 0
        config = validate(build_config(names, overrides))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "print_config" in flags:
        print(config.to_yaml(), end="")
        return 0
    from recall2imagine.checkpoint import CheckpointError
    from recall2imagine.run import TrainingError, train
    from replay import ReplayError

    try:
        return train(config)
    except (ConfigError, CheckpointError, ReplayError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
