"""The config system: presets, regex keys, overrides, types, bad input, the R2I README commands."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recall2imagine.config import Config, ConfigError, _flatten, build_config, load_presets, parse_cli, validate
from recall2imagine.train import main

ROOT = Path(__file__).resolve().parents[1]
PRESETS = """
defaults:
  n: 1
  lr: 0.5
  flag: False
  name: a
  devices: [0]
  net: {units: 4, layers: 2}
  head: {units: 4, layers: 2}
first:
  n: 2
  net.units: 8
second:
  n: 3
  .*\\.units: 16
  head: {layers: 5}
broken:
  n: hello
"""


@pytest.fixture
def presets(tmp_path):
    path = tmp_path / "configs.yaml"
    path.write_text(PRESETS)
    return path


def test_presets_apply_in_the_order_given(presets):
    assert build_config(["first", "second"], path=presets).n == 3
    assert build_config(["second", "first"], path=presets).n == 2


def test_regex_keys_match_every_dotted_key_and_file_order_wins(presets):
    config = build_config(["first", "second"], path=presets)
    assert config.net.units == 16 and config.head.units == 16
    config = build_config(["second", "first"], path=presets)
    assert config.net.units == 8 and config.head.units == 16


def test_nested_preset_blocks_update_only_their_keys(presets):
    config = build_config(["second"], path=presets)
    assert config.head.layers == 5 and config.net.layers == 2


def test_command_line_overrides_come_last_and_are_typed(presets):
    config = build_config(["first"], {"n": ["1e5"], "lr": ["3e-4"], "flag": ["true"], "devices": ["0", "1"]}, path=presets)
    assert config.n == 100000 and isinstance(config.n, int)
    assert config.lr == pytest.approx(3e-4)
    assert config.flag is True
    assert config.devices == [0, 1]
    assert build_config([], {"devices": ["2,3"]}, path=presets).devices == [2, 3]
    assert build_config([], {"flag": ["False"]}, path=presets).flag is False


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"n": ["1.5"]}, ["'n'", "int", "1.5"]),
        ({"flag": ["maybe"]}, ["'flag'", "bool", "maybe"]),
        ({"lr": ["fast"]}, ["'lr'", "float", "fast"]),
        ({"devices": ["x"]}, ["'devices'", "int"]),
        ({"net.unit": ["3"]}, ["Unknown config key 'net.unit'", "net.units"]),
    ],
)
def test_bad_values_and_keys_name_the_problem(presets, overrides, words):
    with pytest.raises(ConfigError) as error:
        build_config([], overrides, path=presets)
    for word in words:
        assert word in str(error.value)


def test_unknown_preset_lists_valid_presets(presets):
    with pytest.raises(ConfigError, match="Unknown preset 'third'. Valid presets: first, second, broken"):
        build_config(["third"], path=presets)


def test_a_preset_with_a_wrongly_typed_value_names_preset_and_key(presets):
    with pytest.raises(ConfigError, match="'n' expects int, got 'hello'"):
        build_config(["broken"], path=presets)


def test_unreadable_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "configs.yaml"
    path.write_text("defaults:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_config([], path=path)
    with pytest.raises(ConfigError, match="Cannot read config file"):
        build_config([], path=tmp_path / "missing.yaml")


def test_config_is_read_only_and_roundtrips_through_yaml(tmp_path):
    config = build_config(["debug"])
    with pytest.raises(AttributeError):
        config.seed = 3
    config.save(tmp_path / "config.yaml")
    assert Config.load(tmp_path / "config.yaml") == config
    assert config.update({"run.steps": 7}).run.steps == 7 and config.run.steps != 7


def test_a_run_saved_before_a_key_existed_loads_with_that_keys_default(tmp_path):
    config = build_config(["cpu", "tmaze"])
    text = "\n".join(line for line in config.to_yaml().splitlines() if not line.startswith("actent_kind"))
    loaded = Config.load_text(text)
    assert loaded.actent_kind == "entropy" != config.actent_kind  # the default, not tmaze's
    assert loaded.batch_length == config.batch_length == 256  # saved keys stay as saved


def test_cli_parsing_splits_presets_overrides_and_flags():
    names, overrides, flags = parse_cli(
        ["--configs", "a", "b,c", "--run.steps=5", "--jax.train_devices", "0", "1", "--print_config", "--x", "-1"]
    )
    assert names == ["a", "b", "c"]
    assert overrides == {"run.steps": ["5"], "jax.train_devices": ["0", "1"], "x": ["-1"]}
    assert flags == {"print_config"}
    with pytest.raises(ConfigError, match="without a value"):
        parse_cli(["--seed"])
    with pytest.raises(ConfigError, match="Unexpected argument 'stray'"):
        parse_cli(["stray"])


def test_every_shipped_preset_builds_and_validates():
    for name in load_presets():
        if name != "defaults":
            validate(build_config([name]))


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("ssm_type", "lstm", ["ssm_type", "'mimo'", "'gru'", "'hcam'"]),
        ("hcam.width", "30", ["hcam.width", "hcam.heads", "divisible"]),
        ("actor.inputs", "deter,memory", ["actor.inputs", "memory", "hidden"]),
        ("batch_size", "0", ["batch_size", "positive"]),
        ("reward_head.bin_limit", "-1.0", ["reward_head.bin_limit", "positive"]),
        ("use_lfs", "True", ["lfs_dir"]),
        ("imag_starts", "0.0", ["imag_starts", "(0, 1]"]),
        ("imag_starts", "1.5", ["imag_starts", "(0, 1]"]),
        ("ssm_type", "mimo2", ["ssm_type", "Closest: 'mimo'"]),
        ("ssm.scan", "paralel", ["ssm.scan", "Closest: 'parallel'"]),
        ("ssm.dropout", "1.0", ["ssm.dropout", "[0, 1)"]),
        ("ssm_cell.n_blocks", "3", ["rssm.hidden", "ssm_cell.n_blocks", "divisible"]),
        ("envs.parallel", "thread", ["envs.parallel", "'none'", "'process'"]),
        ("batch_length", "100000", ["batch_length", "replay_size", "envs.amount"]),
    ],
)
def test_validation_names_the_bad_key_and_what_is_allowed(key, value, words):
    with pytest.raises(ConfigError) as error:
        validate(build_config(["debug"], {key: [value]}))
    for word in words:
        assert word in str(error.value)


MMAZE = ["--configs", "mmaze", "--task", "gym_memory_maze:MemoryMaze-9x9-v0", "--wdb_name", "memory_maze_9x9",
         "--logdir", "./logs_memory_maze_9x9"]
POPGYM = ["--configs", "popgym", "--task", "gym_popgym:popgym-RepeatPreviousEasy-v0", "--wdb_name",
          "popgym_repeat_previous_easy", "--logdir", "./logs_popgym_repeat_previous_easy"]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (MMAZE, {"envs.amount": 40, "run.train_ratio": 64.0, "rssm.hidden": 512, "ssm.n_layers": 5,
                 "wdb_name": "memory_maze_9x9", "encoder.cnn_keys": "image", "actor.layers": 4}),
        (MMAZE + ["--jax.train_devices", "0", "1", "--jax.policy_devices", "0"],
         {"jax.train_devices": [0, 1], "jax.policy_devices": [0]}),
        (MMAZE + ["--use_lfs", "True", "--lfs_dir", "/tmp/r2i_lfs"], {"use_lfs": True, "lfs_dir": "/tmp/r2i_lfs"}),
        (POPGYM, {"envs.amount": 8, "rssm.units": 512, "actor.inputs": ["stoch", "hidden"],
                  "task": "gym_popgym:popgym-RepeatPreviousEasy-v0", "encoder.mlp_layers": 1}),
    ],
)
def test_r2i_readme_commands_print_their_resolved_config(argv, expected, capsys):
    assert main(argv + ["--print_config"]) == 0
    printed = Config.load_text(capsys.readouterr().out)
    for key, value in expected.items():
        assert printed[key] == value, key


@pytest.mark.parametrize("args, words", [
    (["--configs", "popgym", "--run.stepz", "5"], ["Unknown config key 'run.stepz'", "run.steps"]),
    (["--configs", "debug", "--batch_length", "100000"], ["batch_length (100000)", "replay_size", "envs.amount"]),
    (["--configs", "debug", "--logdir", "README.md"], ["README.md", "not a directory"]),
], ids=["unknown-key", "batch-longer-than-replay", "logdir-is-a-file"])
def test_bad_input_exits_2_with_one_message_and_no_traceback(args, words):
    result = subprocess.run([sys.executable, str(ROOT / "recall2imagine" / "train.py"), *args],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_module_entry_point_prints_help_with_presets_and_keys():
    result = subprocess.run([sys.executable, "-m", "recall2imagine.train", "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0
    assert "mmaze" in result.stdout and "debug" in result.stdout and "batch_length" in result.stdout


RESOLVED = json.loads((ROOT / "tests" / "data" / "resolved_configs.json").read_text())
DEFAULTS = next(record["resolved"] for record in RESOLVED if record["argv"] == [])
# Keys renamed since the fixture was recorded: old name -> new name (the old one still works).
RENAMED = {"ssm.parallel": "ssm.scan"}
# Keys added since: key -> (default, {preset that sets it: value}).
ADDED = {"run.solved_score": (1.0, {"tmaze": 0.95}), "run.solved_evals": (0, {"tmaze": 3}),
         "run.solved_metric": ("score", {}), "envs.obs": ("", {}),
         **{f"hcam.{key}": (value, {}) for key, value in dict(
             chunk=16, top_k=4, heads=4, width=128, across_episodes=False,
             time_encoding=True, local_positions=False).items()},
         "hcam.n_layers": (2, {"tmaze": 1, "bsuite": 1}),
         "hcam.max_chunks": (64, {"cpu": 8}), "loss_scales.repval": (0.0, {}), "expl.until": (0, {}),
         "expl.critic": ("shared", {}), "expl.weight": (1.0, {}), "run.model_updates": (1, {}),
         "expl.target": ("latent", {}), "expl.inputs": (["deter", "stoch"], {}),
         "actent_kind": ("entropy", {"tmaze": "uniform", "bsuite": "uniform"})}
# Preset values changed since: key -> {preset: new value}; DEFAULT: the preset no longer sets it.
DEFAULT = object()
# The bsuite preset took the memory presets' widths and settings (benchmarks/RESULTS.md, BSuite memory_len).
BSUITE = {"envs.amount": 4, "run.train_ratio": 64.0, "batch_size": 2, "replay_size": 1000000,
          "rssm.deter": 128, "rssm.units": 64, "rssm.hidden": 32, "rssm.stoch": 8, "rssm.classes": 8,
          "rssm.initial": DEFAULT, "ssm.n_layers": 2, "ssm_cell.n_blocks": 4, "ssm_cell.discretization": DEFAULT,
          "ssm_cell.dt_min": 0.01, "ssm_cell.dt_max": 1.0, "encoder.mlp_layers": 2, "encoder.mlp_units": 64,
          "decoder.mlp_layers": 2, "decoder.mlp_units": 64,
          **{f"{part}.units": 128 for part in ("actor", "critic", "reward_head", "cont_head", "expl")},
          "model_opt.lr": 3e-4, "ssm_opt.lr": 3e-4, "actor_opt.lr": 1e-4, "critic_opt.lr": 1e-4,
          "actent": 3e-3, "loss_scales.reward": 10.0, "loss_scales.rep": 0.0,
          "reward_head.bin_limit": 1.0, "reward_head.outscale": 1.0, "critic.bin_limit": 1.0}
CHANGED = {"loss_scales.rep": {"tmaze": 0.0, "visualmatch": 0.0, "keytodoor": 0.0},
           "batch_size": {"tmaze": 2}, "batch_length": {"tmaze": 256}}
for _key, _value in BSUITE.items():
    CHANGED.setdefault(_key, {})["bsuite"] = _value
# Each preset's keys as written; regex keys (`.*\.units`) set every key they match.
PRESET_KEYS = {name: set(_flatten(tree)) for name, tree in load_presets().items() if isinstance(tree, dict)}


def _sets(preset, key):
    return any(re.fullmatch(written, key) for written in PRESET_KEYS.get(preset, ()))


@pytest.mark.parametrize("record", RESOLVED, ids=[" ".join(r["argv"]) or "defaults" for r in RESOLVED])
def test_every_preset_and_r2i_command_resolves_as_recorded(record, capsys):
    """The fixture holds --print_config of each preset, preset pair and R2I README command, as
    recorded before configuration moved into the parts: the resolved values must not change."""
    assert main(record["argv"] + ["--print_config"]) == 0
    printed = Config.load_text(capsys.readouterr().out).flat()
    expected = {RENAMED.get(key, key): value for key, value in record["resolved"].items()}
    for key, (default, presets) in ADDED.items():
        expected[key] = next((v for preset, v in presets.items() if preset in record["argv"]), default)
    for key, presets in CHANGED.items():
        # The last preset (or flag) naming the key decides, as when the config is built.
        setters = [name for name in record["argv"] if name in presets or _sets(name, key) or name == f"--{key}"]
        if setters and setters[-1] in presets:
            value = presets[setters[-1]]
            expected[key] = DEFAULTS[RENAMED.get(key, key)] if value is DEFAULT else value
    assert printed == expected


@pytest.mark.parametrize("task, obs, words", [
    ("tmaze_passive_5", "symbolic", ["envs.obs is 'symbolic'", "'tmaze_passive_5' has one observation layout"]),
    ("ballet_2_delay16", "vector", ["envs.obs is 'vector'", "offers 'image', 'symbolic'"]),
    ("visualmatch_30", "pixels", ["'envs.obs' is 'pixels'", "'vector', 'image', 'symbolic'"]),
])
def test_an_observation_layout_the_task_does_not_offer_is_refused(task, obs, words):
    with pytest.raises(ConfigError) as error:
        validate(build_config(["debug"], {"task": [task], "envs.obs": [obs]}))
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("task, obs, spaces", [("visualmatch_3", "image", {"image": (64, 64, 3)}),
                                               ("visualmatch_3", "", {"vector": (75,)}),
                                               ("ballet_2_delay16", "symbolic", {"vector": (619,)})])
def test_envs_obs_becomes_the_layout_of_the_environments_the_run_makes(task, obs, spaces):
    from recall2imagine.run import env_kwargs
    from env_wrappers import make_vector

    config = validate(build_config(["debug"], {"task": [task], "envs.obs": [obs]}))
    env = make_vector(config.task, 1, seed=0, **env_kwargs(config))
    assert {key: space.shape for key, space in env.obs_space.spaces.items()} == spaces
    env.close()


@pytest.mark.parametrize("names, task", [(["cpu", "visualmatch"], "visualmatch_30"),
                                         (["cpu", "keytodoor"], "keytodoor_30"),
                                         (["cpu", "ballet"], "ballet_2_delay16"),
                                         (["minigrid"], "gym_minigrid:MiniGrid-MemoryS7-v0")])
def test_memory_presets_resolve_and_keep_whole_episodes_in_a_training_sequence(names, task):
    config = validate(build_config(names))
    assert config.task == task
    # Episode lengths: L + 30 (Visual Match), L + 25 (Key-to-Door), up to the time limit (Ballet
    # 320 at delay 16, MiniGrid MemoryS7 5 * 7^2).
    longest = {"visualmatch_30": 60, "keytodoor_30": 55, "ballet_2_delay16": 320,
               "gym_minigrid:MiniGrid-MemoryS7-v0": 245}[task]
    assert config.batch_length >= longest
    # Key-to-Door shares Visual Match's settings through the YAML anchor, the exploration bonus
    # that both need (0 in R2I's defaults) included. Its own: four instances (no colour maps)
    # and the kind of bonus: the next latent, on the task critic, for the first 200k env steps;
    # Visual Match's predicts the next reward from the memory too, on its own critic, throughout.
    if task == "keytodoor_30":
        other = validate(build_config(["cpu", "visualmatch"])).flat()
        own = {"task", "envs.amount", "expl.target", "expl.inputs", "expl.critic", "expl.until", "expl.units"}
        assert {k for k, v in config.flat().items() if other[k] != v} == own
        assert (config.envs.amount, config.expl.target, config.expl.critic, config.expl.until) == (
            4, "latent", "shared", 200000)
        assert (other["envs.amount"], other["expl.target"], other["expl.critic"], other["expl.until"]) == (
            6, "reward", "separate", 0)
        assert "hidden" in other["expl.inputs"] and "hidden" not in config.expl.inputs
        assert config.expl.scale == other["expl.scale"] > 0 and validate(build_config(["cpu"])).expl.scale == 0


def test_popgym_cpu_is_popgym_cpu_with_tmaze_widths_and_windows():
    """`popgym popgym_cpu` differs from `popgym cpu` only in the sizes it takes from T-Maze's
    preset (HCAM's one block too): the merged `cpu` patterns (`.*\\.units`) must not undo its rssm widths."""
    narrow = validate(build_config(["popgym", "popgym_cpu"])).flat()
    wide = validate(build_config(["popgym", "cpu"])).flat()
    tmaze = validate(build_config(["cpu", "tmaze"])).flat()
    taken = {"batch_size", "batch_length", "encoder.mlp_units", "decoder.mlp_units", "ssm_cell.dt_min",
             "ssm_cell.dt_max", "hcam.n_layers",
             *(f"rssm.{key}" for key in ("deter", "units", "hidden", "stoch", "classes"))}
    assert {key for key in narrow if narrow[key] != wide[key]} == taken
    assert {key: narrow[key] for key in taken} == {key: tmaze[key] for key in taken}


def test_every_default_key_is_declared_by_exactly_one_part():
    from recall2imagine.config import check_declared, declarations

    check_declared(build_config([]).flat())
    owners = declarations()["owners"]
    assert owners["ssm.scan"] == "recall2imagine.cores" and owners["actor.units"] == "recall2imagine.behavior"
    with pytest.raises(RuntimeError, match="undeclared \\['extra.key'\\]"):
        check_declared({**build_config([]).flat(), "extra.key": 1})


@pytest.mark.parametrize("value, mode", [("True", "parallel"), ("False", "sequential"), ("auto", "auto"),
                                         ("sequential", "sequential")])
def test_r2i_ssm_parallel_spelling_sets_the_scan_mode(value, mode):
    assert validate(build_config([], {"ssm.parallel": [value]})).ssm.scan == mode


def test_a_part_receives_its_own_slice_only():
    import gymnasium as gym
    import numpy as np

    from recall2imagine import behavior, world_model
    from recall2imagine.agent import Agent

    config = validate(build_config(["debug"]))
    agent = Agent(gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32)}), gym.spaces.Discrete(2),
                  config)
    assert set(agent.wm.config.flat()) == {k for options in world_model.SLICE for k in options}
    assert set(agent.behavior.config.flat()) == set(behavior.OPTIONS)
    assert "task" not in agent.wm.config and "run" not in agent.behavior.config
    assert set(config.rssm.flat()) == {"deter", "units", "hidden", "stoch", "classes", "act", "norm", "initial",
                                      "unimix", "action_clip"}
