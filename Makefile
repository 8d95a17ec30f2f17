# The README's two commands. Both create .venv on first use and reinstall only
# when setup.py changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=
LOGDIR ?= ./logs/tmaze_passive_50

.PHONY: train test

# Python runs with its bytecode cache on even where the environment sets
# PYTHONDONTWRITEBYTECODE (this machine does): the installs below skip byte-compiling every
# package (--no-compile), so the first import of a module writes its .pyc and every later
# process loads it. Without it each of the suite's ~50 Python processes compiled JAX, Flax and
# the rest from source again, about 2 s of CPU each.
RUN := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile -e .
	touch $@

$(VENV)/.installed-test: setup.py | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile -e '.[test]'
	touch $@ $(VENV)/.installed

# Train the default task (passive T-Maze, corridor 50) on the CPU with a live progress bar.
train: $(VENV)/.installed
	$(RUN) recall2imagine/train.py --configs cpu tmaze --logdir $(LOGDIR) $(ARGS)

# Two workers, each starting on half of the slow tests (tests/conftest.py); idle workers take
# over queued tests from busy ones (worksteal). From a fresh clone here, install included:
# 8:45 to 10:18 on 2026-12-03, 6:17 to 7:41 on 2026-12-05, 6:48 to 9:37 on 2026-12-06 (7:50 at 77b355a, 9:37 at 143aebd,
# 9:24 at 20c6be3 with the install down from 0:57 to 0:29, 8:09 at 11ada1c, 8:15 at 03a8513,
# 10:03 and 10:19 at b5433a9, two runs back to back, with untouched tests 20-40% slower too,
# 9:59 at d6b28f0 and 9:55 on its code later, 10:38 at 4de92c3; 7:43 at a82faea, once each Python
# process loaded bytecode instead of compiling its imports from source: 13:00 of CPU against 18:17;
# 9:04 and 9:07 on the same code right after, with the same tests 10-30% slower; 8:42 at f1b85bc;
# 9:10 at 3b203a9 on 2026-12-07, 524 tests; 9:04 at 1c89317; 11:29 at 78f3386 and 12:10 on it
# the next morning, 21:20 of CPU; 7:49 at fca88e3, compiled without XLA's CPU fusion emitters:
# 13:08 of CPU, 525 tests; 8:10 at ddec525; 7:22 at 9b83ca9; 6:58 at f2f4302;
# 8:18 at 4004375; 9:42 at 7333afa; 5:09 at 477aca7 the same day, with 8:14 of CPU;
# 5:06 at 032a86f, 527 tests; 9:09 at a036fcb the same evening, with 15:54 of CPU: the
# machine's slow phase; 9:12 at 0d346ff, 524 tests, five train.py-heavy tests folded into
# others with their checks: 14:53 of CPU, still the slow phase; 9:07 at 1b8784f; 8:51 at
# 0ed8791)
# (benchmarks/results/test_suite_time_*.json; the machine's speed varies).
test: $(VENV)/.installed-test
	$(RUN) -m pytest tests -n 2 --dist worksteal $(ARGS)
