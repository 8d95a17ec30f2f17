"""Ballet rules (SEEDS.md section 2) through env_wrappers.make."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import env_wrappers
from env_wrappers.ballet import (_OFFSETS, COLOURS, DANCE_NAMES, DANCES, INSTRUCTIONS, SHAPES, SLOTS,
                                 Ballet)

N, NE, E, SE, S, SW, W, NW = range(8)
STEP = {N: (-1, 0), NE: (-1, 1), E: (0, 1), SE: (1, 1), S: (1, 0), SW: (1, -1), W: (0, -1), NW: (-1, -1)}
VOCAB = len(INSTRUCTIONS)
COLOUR_OF = {tuple(rgb): name for name, rgb in COLOURS.items()}


def decode(vector):
    """Symbolic vector -> ({colour name: (row, col) in the 11x11 window}, instruction)."""
    cells = vector[:-VOCAB].reshape(11, 11, 5)
    dancers = {COLOUR_OF[tuple(np.rint(cells[r, c, 2:] * 255).astype(int))]: (int(r), int(c))
               for r, c in np.argwhere(cells[..., 1] == 1)}
    return dancers, INSTRUCTIONS[int(np.argmax(vector[-VOCAB:]))]


def toward(here, there):
    """The compass action one step from here toward there."""
    d_row, d_col = np.sign(np.subtract(there, here))
    return next(action for action, move in STEP.items() if move == (d_row, d_col))


class WatchAndRemember:
    """Records every dancer's window positions, then walks to the one whose moves match the instruction.

    Uses the symbolic observations only: until the choice the agent stands in the room's centre,
    so window cells are room cells.
    """

    def __init__(self):
        self.tracks, self.goal, self.here = {}, None, (5, 5)

    def __call__(self, obs):
        dancers, instruction = decode(obs["vector"])
        if instruction == "watch":
            for colour, cell in dancers.items():
                self.tracks.setdefault(colour, []).append(cell)
            return N  # ignored during the dances
        if self.goal is None:
            self.goal = next(home for home, moves in map(self.home_and_moves, self.tracks.values())
                             if self.performed(moves, instruction))
        action = toward(self.here, self.goal)
        self.here = tuple(np.add(self.here, STEP[action]))
        return action

    @staticmethod
    def home_and_moves(track):
        """The cell a dancer stands on most (its slot) and its offsets from there, frame by frame."""
        home = max(set(track), key=track.count)
        return home, [tuple(np.subtract(cell, home)) for cell in track]

    @staticmethod
    def performed(moves, dance):
        expected = [tuple(offset) for offset in _OFFSETS[DANCE_NAMES.index(dance)]]
        return any(moves[i:i + 16] == expected for i in range(len(moves) - 15))


def run(env, policy):
    obs, _ = env.reset()
    observations, rewards, done = [obs], [], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        observations.append(obs)
        rewards.append(reward)
        done = terminated or truncated
    return observations, rewards, terminated, truncated, info


def test_tables_match_the_paper_sizes_and_every_dance_returns_home_within_its_square():
    assert len(DANCES) == 13 and len(SHAPES) == 15 and len(COLOURS) == 19 and len(INSTRUCTIONS) == 14
    assert _OFFSETS.shape == (13, 16, 2)
    assert np.abs(_OFFSETS).max() == 1 and not _OFFSETS[:, -1].any()
    assert len({offsets.tobytes() for offsets in _OFFSETS}) == 13
    assert len({mask.tobytes() for mask in SHAPES.values()}) == 15
    assert len(set(COLOURS.values())) == 19


@pytest.mark.parametrize("dancers, delay", [(1, 16), (2, 16), (3, 48)])
def test_instruction_is_watch_until_frame_n_times_d_plus_15_and_actions_wait_for_it(dancers, delay):
    env = env_wrappers.make(f"ballet_{dancers}_delay{delay}", seed=dancers, obs="symbolic")
    game = env.unwrapped
    choice = dancers * (delay + 15)
    assert game.choice_frame == choice
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs, _ = env.reset()
        target = next(d for d in game.dancers if d.value == 1)
        for frame in range(1, choice + 1):
            assert decode(obs["vector"])[1] == "watch"
            obs, reward, terminated, truncated, _ = env.step(int(rng.integers(8)))
            assert game.agent == (5, 5) and reward == 0 and not (terminated or truncated)
        assert decode(obs["vector"])[1] == target.dance  # the action of frame n(d+15) was ignored too
        env.step(NW)
        assert game.agent == (4, 4)


@pytest.mark.parametrize("dancers, delay", [(2, 16), (8, 16), (3, 48)])
def test_dancers_dance_one_at_a_time_in_order(dancers, delay):
    env = env_wrappers.make(f"ballet_{dancers}_delay{delay}", seed=1, obs="symbolic")
    game = env.unwrapped
    obs, _ = env.reset()
    for frame in range(game.choice_frame + 1):  # the agent stays in the centre throughout
        positions, _ = decode(obs["vector"])
        assert len(positions) == dancers
        k, move = divmod(frame, delay + 15)
        for i, dancer in enumerate(game.dancers):
            offset = _OFFSETS[DANCE_NAMES.index(dancer.dance), move] if (i == k and move < 16) else (0, 0)
            assert positions[dancer.colour] == tuple(np.add(dancer.slot, offset)), (frame, i)
        obs, *_ = env.step(0)


@pytest.mark.parametrize("level", ["2_delay16", "4_delay16", "8_delay16", "2_delay48"])
def test_policy_that_remembers_the_dances_always_reaches_the_target(level):
    env = env_wrappers.make(f"ballet_{level}", seed=2, obs="symbolic")
    for _ in range(4):
        _, rewards, terminated, truncated, info = run(env, WatchAndRemember())
        assert terminated and not truncated and info["success"] is True
        assert rewards[-1] == 1.0 and sum(rewards) == 1.0
        assert len(rewards) == env.unwrapped.choice_frame + 3  # every slot is 3 steps from the centre


def test_stepping_onto_another_dancer_ends_the_episode_with_nothing():
    env = env_wrappers.make("ballet_4_delay16", seed=3)
    game = env.unwrapped
    for _ in range(5):
        env.reset()
        wrong = next(d for d in game.dancers if d.value == 0)
        for _ in range(game.choice_frame):
            env.step(S)
        while True:
            _, reward, terminated, truncated, info = env.step(toward(game.agent, wrong.slot))
            if terminated:
                break
        assert reward == 0.0 and not truncated and info["success"] is False and game.agent == wrong.slot


@pytest.mark.parametrize("delay, limit", [(16, 320), (48, 1024)])
def test_the_episode_is_cut_at_320_or_1024_frames(delay, limit):
    env = env_wrappers.make(f"ballet_8_delay{delay}", seed=4, obs="symbolic")
    steps = iter(range(2000))
    # Back and forth between (5, 5) and (4, 4): never a slot.
    _, rewards, terminated, truncated, info = run(env, lambda obs: NW if next(steps) % 2 else SE)
    assert len(rewards) == limit and truncated and not terminated
    assert sum(rewards) == 0 and info["success"] is False


def test_fixed_choice_without_memory_wins_one_in_n():
    """Walks to the first occupied slot in a fixed order: success ~ 1/n, the memoryless level."""
    for dancers, episodes in ((2, 400), (4, 300)):
        env = Ballet(dancers, 16, obs="symbolic")
        env.reset(seed=dancers)
        wins = []
        for _ in range(episodes):
            obs, _ = env.reset()
            for _ in range(env.choice_frame):
                obs, *_ = env.step(0)
            occupied = set(decode(obs["vector"])[0].values())
            goal = next(slot for slot in SLOTS if slot in occupied)
            done = False
            while not done:
                _, reward, terminated, truncated, info = env.step(toward(env.agent, goal))
                done = terminated or truncated
            wins.append(info["success"])
        assert np.mean(wins) == pytest.approx(1 / dancers, abs=0.08)


def test_each_episode_draws_distinct_dancers_and_one_target():
    env = env_wrappers.make("ballet_8_delay16", seed=5)
    game = env.unwrapped
    targets, layouts = set(), set()
    for _ in range(50):
        env.reset()
        dancers = game.dancers
        for field in ("slot", "dance", "shape", "colour"):
            assert len({getattr(d, field) for d in dancers}) == 8
        assert sorted(d.value for d in dancers) == [0.0] * 7 + [1.0]
        targets.add(next(i for i, d in enumerate(dancers) if d.value == 1))
        layouts.add(tuple(d.slot for d in dancers))
    assert len(targets) > 4 and len(layouts) == 50


def test_image_shows_the_agent_in_the_centre_and_the_target_over_it_at_the_end():
    env = env_wrappers.make("ballet_2_delay16", seed=6, image_size=99)
    game = env.unwrapped
    obs, _ = env.reset()
    assert obs["image"].shape == (99, 99, 3) and obs["image"].dtype == np.uint8
    assert (obs["image"][45:54, 45:54] == 255).all()  # the agent, white
    assert (obs["image"][:9, :] == 40).all()  # the top wall, RGB 40
    np.testing.assert_array_equal(obs["vector"], np.eye(VOCAB)[0])
    target = next(d for d in game.dancers if d.value == 1)
    for _ in range(game.choice_frame):
        obs, *_ = env.step(0)
    while True:
        obs, reward, terminated, *_ = env.step(toward(game.agent, target.slot))
        if terminated:
            break
    assert reward == 1.0
    tile = SHAPES[target.shape][..., None] * np.array(COLOURS[target.colour], np.uint8)
    np.testing.assert_array_equal(obs["image"][45:54, 45:54], tile)
    np.testing.assert_array_equal(obs["vector"], np.eye(VOCAB)[1 + DANCE_NAMES.index(target.dance)])


@pytest.mark.parametrize("obs_mode, keys, size", [("image", {"image", "vector"}, 64),
                                                  ("image", {"image", "vector"}, 32),
                                                  ("symbolic", {"vector"}, None)])
def test_every_observation_lies_in_the_observation_space(obs_mode, keys, size):
    kwargs = {"obs": obs_mode} if size is None else {"obs": obs_mode, "image_size": size}
    env = env_wrappers.make("ballet_2_delay16", seed=7, **kwargs)
    assert set(env.observation_space.spaces) == keys
    rng = np.random.default_rng(0)
    for _ in range(3):
        observations, *_ = run(env, lambda obs: int(rng.integers(8)))
        for obs in observations:
            assert env.observation_space.contains(obs)
    if size:
        assert env.observation_space["image"].shape == (size, size, 3)
    else:
        assert env.observation_space["vector"].shape == (11 * 11 * 5 + 14,)


def test_same_seed_gives_the_same_episodes():
    def trace(seed, obs_mode):
        env = env_wrappers.make("ballet_2_delay16", seed=seed, obs=obs_mode)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(2):
            observations, rewards, *_ = run(env, lambda obs: int(rng.integers(8)))
            out += [np.concatenate([np.ravel(o[key]) for o in observations for key in sorted(o)]), rewards]
        return np.concatenate(out)

    for obs_mode in ("image", "symbolic"):
        np.testing.assert_array_equal(trace(8, obs_mode), trace(8, obs_mode))
        assert not np.array_equal(trace(8, obs_mode), trace(9, obs_mode))


@pytest.mark.filterwarnings("ignore:.*WARN:")
@pytest.mark.parametrize("obs_mode", ["image", "symbolic"])
def test_gymnasium_check_env_passes(obs_mode):
    check_env(env_wrappers.make("ballet_2_delay16", seed=0, obs=obs_mode), skip_render_check=True)


@pytest.mark.parametrize("task", ["ballet_9_delay16", "ballet_2_delay20", "ballet_0_delay16", "ballet_x",
                                  "ballet_2_delay16_extra"])
def test_bad_task_strings_name_the_valid_form(task):
    with pytest.raises(ValueError, match=r"ballet_<dancers>_delay<16\|48>"):
        env_wrappers.make(task)


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="max_steps"):
        Ballet(2, 20)
    with pytest.raises(ValueError, match="obs must be"):
        Ballet(2, 16, obs="vector")
    assert Ballet(2, 20, max_steps=100).max_steps == 100
