"""Replay buffer speed and memory: add and sample throughput, peak RSS against capacity.

    python benchmarks/replay_speed.py            # full run, writes benchmarks/results/replay_speed.{json,csv}
    python benchmarks/replay_speed.py --quick    # smaller sizes, for a smoke test

Cases: (a) 64x64x3 uint8 images sampled at B=16 T=64 and B=4 T=1024, per
compression; (b) 32-float vectors sampled at B=16 T=256. Every step also has
action, reward, is_first, is_last, is_terminal, as in training. Sampling is timed
in the caller (prefetch=0): the cost a prefetch thread hides from training. Peak
RSS is the VmHWM high-water mark (ru_maxrss off Linux) of a fresh subprocess per fill size.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import replay  # noqa: E402
from benchmarks.common import RESULTS, run_metadata, versions, write_record  # noqa: E402

EPISODE = 500


def image_frames(count: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic 64x64x3 frames shaped like a rendered first-person scene: a textured wall that
    scrolls as the view turns, a flat floor, a few moving objects. No per-frame noise (renders
    have none), so compression sees the redundancy of real frames only roughly."""
    y, x = np.mgrid[0:64, 0:64]
    texture = rng.integers(0, 24, (10, 32, 3)).repeat(4, 0).repeat(4, 1)  # 4x4-pixel texels
    frames = np.empty((count, 64, 64, 3), np.uint8)
    for i in range(count):
        frame = np.stack([40 + y * 2, 60 + x, 120 + (x + y) // 2], -1).astype(np.int16)
        shift = (3 * i) % 64
        frame[:40] += texture[:, shift:shift + 64]
        frame[40:] = (90, 80, 70)  # floor
        for k in range(3):
            cy, cx = (17 * k + 3 * i) % 56, (29 * k + 5 * i) % 56
            frame[cy:cy + 8, cx:cx + 8] = (200, 50 * k, 30)
        frames[i] = np.clip(frame, 0, 255)
    return frames


def make_step(obs_key: str, pool: np.ndarray, index: int) -> dict:
    return {
        obs_key: pool[index % len(pool)],
        "action": np.float32([index % 5 == j for j in range(5)]),
        "reward": np.float32(index % 11 == 0),
        "is_first": index % EPISODE == 0,
        "is_last": index % EPISODE == EPISODE - 1,
        "is_terminal": False,
    }


def time_add(buffer, obs_key: str, pool: np.ndarray, steps: int) -> float:
    """Steps per second of add() (writes and commits included), one worker stream."""
    start = time.perf_counter()
    for index in range(steps):
        buffer.add(make_step(obs_key, pool, index))
    buffer.flush()
    return steps / (time.perf_counter() - start)


def time_sample(buffer, batch_size: int, length: int, seconds: float) -> float:
    """Batches per second of synchronous sample() calls for about `seconds`."""
    buffer.sample(batch_size, length)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        buffer.sample(batch_size, length)
        count += 1
    return count / (time.perf_counter() - start)


def bench_case(root: Path, name: str, obs_key: str, pool, steps: int, compression: str,
               shapes, seconds: float, fsync: bool = True, chunk_size: int = 1024) -> list:
    """Fill `steps` steps, then time sampling for each (batch, length) in `shapes`."""
    directory = root / f"{name}_{compression}_{fsync}"
    buffer = replay.Replay(directory, capacity=steps, chunk_size=chunk_size,
                           compression=compression, prefetch=0, seed=0, fsync=fsync)
    add_rate = time_add(buffer, obs_key, pool, steps)
    disk = buffer.stats()["bytes_on_disk"] / steps
    base = {"case": name, "compression": compression, "fsync": fsync, "chunk_size": chunk_size,
            "steps": steps, "add_steps_per_s": round(add_rate),
            "disk_bytes_per_step": round(disk, 1)}
    rows = [{**base, "batch": None, "length": None, "sample_batches_per_s": None,
             "sample_steps_per_s": None}] if not shapes else []
    for batch_size, length in shapes:
        rate = time_sample(buffer, batch_size, length, seconds)
        rows.append({**base, "batch": batch_size, "length": length,
                     "sample_batches_per_s": round(rate, 2),
                     "sample_steps_per_s": round(rate * batch_size * length)})
    for row in rows:
        sample = ("sample: not timed" if row["batch"] is None else
                  f"B={row['batch']:<3d} T={row['length']:<5d} sample "
                  f"{row['sample_batches_per_s']:7.2f} batches/s {row['sample_steps_per_s']:8d} steps/s")
        print(f"  {name:7s} {compression:5s} fsync={fsync!s:5s} add {add_rate:7.0f} steps/s  "
              f"disk {disk:7.1f} B/step  {sample}", flush=True)
    buffer.close()
    shutil.rmtree(directory)
    return rows


def fill_vectors(directory: str, steps: int):
    """Subprocess body: fill `steps` vector steps into a replay of that capacity."""
    pool = np.random.default_rng(0).standard_normal((4096, 32)).astype(np.float32)
    buffer = replay.Replay(directory, capacity=steps, chunk_size=1024, prefetch=0)
    start = time.perf_counter()
    for index in range(steps):
        buffer.add(make_step("vector", pool, index))
    buffer.close()
    seconds = time.perf_counter() - start
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"steps": steps, "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
                      "ru_maxrss_mib": round(maxrss / 1024, 1), "fill_seconds": round(seconds, 1)}))


def peak_rss_kib() -> int:
    """Peak resident memory of this process in KiB.

    On Linux ru_maxrss survives exec, so a child forked from a large parent would report
    the parent's size; VmHWM (the high-water mark of this process image) does not.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_rss(root: Path, steps: int) -> dict:
    directory = root / f"rss_{steps}"
    out = subprocess.run([sys.executable, __file__, "--fill-vectors", str(directory), str(steps)],
                         check=True, capture_output=True, text=True)
    shutil.rmtree(directory)
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(argv) -> dict:
    return {
        **run_metadata(["command", "date", "python"], argv=argv),
        **versions(["numpy", "zarr", "numcodecs"]),
        **run_metadata(["platform", "cpu_count", "cpus_usable", "load_average_at_start"]),
        "note": "CPU shared with other jobs during the run; one worker stream; synthetic frames",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no result files")
    parser.add_argument("--seconds", type=float, default=4.0, help="time per sampling measurement")
    parser.add_argument("--tmp", default=None, help="scratch directory (default: system temp)")
    args = parser.parse_args()
    image_steps, vector_steps = (4096, 8192) if args.quick else (32768, 262144)
    rss_sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    info = environment(sys.argv)
    wall_start, cpu_start = time.perf_counter(), os.times()
    rng = np.random.default_rng(0)
    images = image_frames(512, rng)
    vectors = rng.standard_normal((4096, 32)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as scratch:
        root = Path(scratch)
        print("throughput (chunk_size 1024, capacity = steps filled, prefetch off)", flush=True)
        for compression in ("zstd", "lz4", "none"):
            rows += bench_case(root, "images", "image", images, image_steps, compression,
                               ((16, 64), (4, 1024)), args.seconds)
        rows += bench_case(root, "images", "image", images, image_steps, "zstd", (),
                           args.seconds, fsync=False)
        rows += bench_case(root, "vectors", "vector", vectors, vector_steps, "zstd",
                           ((16, 256),), args.seconds)
        rows += bench_case(root, "vectors", "vector", vectors, vector_steps, "zstd", (),
                           args.seconds, fsync=False)
        print("peak RSS while filling vector steps (capacity = steps)", flush=True)
        rss = [measure_rss(root, steps) for steps in rss_sizes]
        for entry in rss:
            print(f"  {entry['steps']:>9d} steps: peak RSS {entry['peak_rss_mib']:7.1f} MiB "
                  f"(ru_maxrss {entry['ru_maxrss_mib']} MiB includes the forking parent; "
                  f"fill {entry['fill_seconds']} s)", flush=True)
    cpu = sum(os.times()[:4]) - sum(cpu_start[:4])
    wall = time.perf_counter() - wall_start
    # CPU seconds received per wall second (1.0 = one whole core): how contended the run was.
    info["cpu_share"] = round(cpu / wall, 2)
    print(f"process CPU share {info['cpu_share']} cores over {wall:.0f} s wall")
    if args.quick:
        return
    keys = ("command", "date", "python", "numpy", "zarr", "cpu_count", "cpu_share", "note")
    write_record(RESULTS / "replay_speed", {**info, "throughput": rows, "peak_rss": rss}, rows,
                 comments=[f"{key}: {info[key]}" for key in keys],
                 footer=[f"peak_rss steps={e['steps']} mib={e['peak_rss_mib']}" for e in rss])


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fill-vectors":
        fill_vectors(sys.argv[2], int(sys.argv[3]))
    else:
        main()
