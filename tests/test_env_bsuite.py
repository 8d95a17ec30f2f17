"""BSuite memory_len / discounting_chain through env_wrappers, and bsuite's score rule."""

import numpy as np
import pytest
from bsuite import sweep

import env_wrappers


def context_episode(env, remember=True):
    """One memory_len episode; the policy answers the context seen at t = 0 (or guesses 0)."""
    obs, _ = env.reset()
    context = obs["vector"][2]
    done, steps = False, 0
    while not done:
        action = int(context > 0) if remember else 0
        obs, _, terminated, truncated, info = env.step(action)
        assert not truncated
        done, steps = terminated, steps + 1
    return info["episode"]["r"], info["episode"]["l"]


@pytest.mark.parametrize("bsuite_id", ["memory_len/0", "memory_len/5", "memory_len/22"])
def test_remembering_the_context_scores_plus_one_every_episode(bsuite_id):
    length = sweep.SETTINGS[bsuite_id]["memory_length"]
    env = env_wrappers.make(f"dm_bsuite_{bsuite_id}", seed=0)
    results = [context_episode(env) for _ in range(50)]
    assert all(score == 1.0 for score, _ in results)
    assert all(steps == length + 1 for _, steps in results)


def test_a_constant_answer_is_right_about_half_the_time():
    env = env_wrappers.make("dm_bsuite_memory_len/3", seed=1)
    scores = [context_episode(env, remember=False)[0] for _ in range(400)]
    assert set(scores) == {-1.0, 1.0}
    assert np.mean(np.array(scores) > 0) == pytest.approx(0.5, abs=0.08)


def test_same_seed_gives_same_contexts_and_reset_seed_rebuilds():
    def contexts(env, **reset_kwargs):
        first = env.reset(**reset_kwargs)[0]["vector"][2]
        return [first] + [env.reset()[0]["vector"][2] for _ in range(29)]
    a = contexts(env_wrappers.make("dm_bsuite_memory_len/2", seed=5))
    b = contexts(env_wrappers.make("dm_bsuite_memory_len/2", seed=5))
    c = contexts(env_wrappers.make("dm_bsuite_memory_len/2", seed=6))
    d = contexts(env_wrappers.make("dm_bsuite_memory_len/2", seed=6), seed=5)
    assert a == b == d and a != c


def test_discounting_chain_best_chain_pays_one_point_one_after_100_steps():
    env = env_wrappers.make("dm_bsuite_discounting_chain/2", seed=0)
    env.reset()
    for _ in range(100):
        _, _, terminated, _, info = env.step(2)  # mapping_seed 2 puts the bonus on chain 2
    assert terminated and info["episode"] == pytest.approx({"r": 1.1, "l": 100, "t": info["episode"]["t"]})


def test_memory_len_score_passes_a_length_only_above_62_5_percent_correct():
    def returns(correct, total=10_000):
        return np.where(np.arange(total) < correct, 1.0, -1.0)
    scores = env_wrappers.bsuite_score({
        "memory_len/0": returns(6251), "memory_len/1": returns(6250),
        "memory_len/2": returns(10_000), "memory_len/3": returns(0)})
    assert scores == {"memory_len": 0.5}
    # Episodes past bsuite's 10,000 do not count.
    late = np.concatenate([returns(6000), np.ones(5000)])
    assert env_wrappers.bsuite_score({"memory_len/4": late}) == {"memory_len": 0.0}


def test_discounting_chain_score_is_clipped_linear_in_mean_return():
    best = {f"discounting_chain/{i}": np.full(1000, 1.1) for i in range(5)}
    assert env_wrappers.bsuite_score(best) == {"discounting_chain": pytest.approx(1.0)}
    mixed = {"discounting_chain/0": np.full(1000, 1.0), "discounting_chain/1": np.full(1000, 1.1)}
    assert env_wrappers.bsuite_score(mixed)["discounting_chain"] == pytest.approx(0.5)
    assert env_wrappers.bsuite_score({"discounting_chain/0": np.zeros(10)})["discounting_chain"] == 0.0


def test_score_helper_matches_bsuite_analysis_on_random_results():
    pd = pytest.importorskip("pandas")
    memory_analysis = pytest.importorskip("bsuite.experiments.memory_len.analysis")
    chain_analysis = pytest.importorskip("bsuite.experiments.discounting_chain.analysis")
    rng = np.random.default_rng(0)
    memory = {f"memory_len/{i}": np.where(rng.random(n) < p, 1.0, -1.0)
              for i, (n, p) in enumerate([(12_000, 0.64), (3000, 0.6), (10_000, 0.7), (500, 0.9)])}
    frame = pd.concat([pd.DataFrame({
        "episode": np.arange(1, len(r) + 1), "total_perfect": np.cumsum(r > 0),
        "memory_length": sweep.SETTINGS[bsuite_id]["memory_length"]}) for bsuite_id, r in memory.items()])
    ours = env_wrappers.bsuite_score(memory)["memory_len"]
    assert ours == pytest.approx(memory_analysis.score(frame)) and 0 < ours < 1
    chains = {f"discounting_chain/{i}": rng.choice([1.0, 1.1], 1000, p=[q, 1 - q])
              for i, q in enumerate([0.1, 0.3, 0.5])}
    frame = pd.concat([pd.DataFrame({"episode": np.arange(1, 1001), "total_return": np.cumsum(r)})
                       for r in chains.values()])
    ours = env_wrappers.bsuite_score(chains)["discounting_chain"]
    assert ours == pytest.approx(chain_analysis.score(frame)) and 0 < ours < 1


def test_settings_can_be_overridden_and_unknown_ones_are_named():
    env = env_wrappers.make("dm_bsuite_memory_len/0", seed=0, memory_length=200)
    assert context_episode(env) == (1.0, 201)
    with pytest.raises(ValueError, match="memory_length"):
        env_wrappers.make("dm_bsuite_memory_len/0", memory_lenght=3)


def test_unknown_bsuite_id_lists_close_matches():
    with pytest.raises(ValueError, match="memory_len/2"):
        env_wrappers.make("dm_bsuite_memory_len/222")
