"""Speed of ssm.scan (parallel vs sequential) against a GRU of equal width.

Times forward and forward+backward passes over sequences of length T at batch B
with P complex states (the GRU has P hidden units and P inputs), prints a table
and writes CSV and JSON with the command and environment to benchmarks/results/.

    python benchmarks/scan_speed.py            # T = 64, 256, 1024, 4096
    python benchmarks/scan_speed.py --quick    # T = 64, 256
"""

import argparse
import pathlib
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import ssm  # noqa: E402  (repository root on the path for a plain script run)
from benchmarks.common import RESULTS, load_average, run_metadata, timed, write_record  # noqa: E402

FIELDS = ["model", "pass", "T", "batch", "width", "first_call_s", "median_s", "min_s",
          "repeats", "ms_per_step"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only T = 64, 256")
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--state", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reset-rate", type=float, default=0.01,
                        help="probability of an episode start per step")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.lengths = [64, 256]
    return args


def scan_problem(key, steps, batch, state, reset_rate):
    """S5-like inputs: time-invariant stable a (P,), b (T, B, P), resets (T, B)."""
    key_a, key_b, key_r = jax.random.split(key, 3)
    angle = jax.random.uniform(key_a, (state,), maxval=jnp.pi)
    a = (0.99 * jnp.exp(1j * angle)).astype(jnp.complex64)
    b = jax.random.normal(key_b, (steps, batch, state), jnp.complex64)
    reset = jax.random.bernoulli(key_r, reset_rate, (steps, batch))
    return a, b, reset, jnp.zeros((state,), jnp.complex64)


def scan_functions(mode):
    def forward(a, b, reset, x0):
        return ssm.scan(a, b, reset, x0, mode=mode)

    def loss(a, b, reset, x0):
        return jnp.sum(jnp.abs(forward(a, b, reset, x0)) ** 2)

    backward = jax.grad(loss, argnums=(0, 1, 3))
    return jax.jit(forward), jax.jit(backward)


def gru_functions(width):
    """A flax GRUCell of ``width`` units in jax.lax.scan, reset to zeros on resets."""
    cell = nn.GRUCell(width)

    def forward(params, inputs, reset):
        def step(h, xs):
            x, r = xs
            h, _ = cell.apply(params, jnp.where(r[:, None], 0.0, h), x)
            return h, h

        h0 = jnp.zeros(inputs.shape[1:-1] + (width,), inputs.dtype)
        return jax.lax.scan(step, h0, (inputs, reset))[1]

    def loss(params, inputs, reset):
        return jnp.sum(forward(params, inputs, reset) ** 2)

    def init(key, inputs):
        return cell.init(key, jnp.zeros(inputs.shape[1:-1] + (width,)), inputs[0])

    return init, jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def row(model, pass_name, steps, args, first, times):
    median = statistics.median(times)
    return {"model": model, "pass": pass_name, "T": steps, "batch": args.batch,
            "width": args.state, "first_call_s": round(first, 4),
            "median_s": round(median, 5), "min_s": round(min(times), 5),
            "repeats": len(times), "ms_per_step": round(1e3 * median / steps, 4)}


def benchmark(args):
    rows = []
    key = jax.random.key(0)
    gru_init, *gru_passes = gru_functions(args.state)
    for steps in args.lengths:
        a, b, reset, x0 = scan_problem(key, steps, args.batch, args.state, args.reset_rate)
        for mode in ("sequential", "parallel"):
            for pass_name, fn in zip(("forward", "forward+backward"), scan_functions(mode)):
                first, times = timed(lambda i: fn(a, b, reset, x0), args.repeats)
                rows.append(row(f"scan-{mode}", pass_name, steps, args, first, times))
                print_row(rows[-1])
        inputs = jax.random.normal(key, (steps, args.batch, args.state))
        params = gru_init(key, inputs)
        for pass_name, fn in zip(("forward", "forward+backward"), gru_passes):
            first, times = timed(lambda i: fn(params, inputs, reset), args.repeats)
            rows.append(row("gru", pass_name, steps, args, first, times))
            print_row(rows[-1])
    return rows


def print_row(r):
    print(f"{r['model']:<16} {r['pass']:<17} T={r['T']:<5} median {r['median_s']:>9.4f} s"
          f"  {r['ms_per_step']:>8.4f} ms/step  first call {r['first_call_s']:>7.2f} s",
          flush=True)


def print_table(rows):
    """One line per T: median seconds per call of every model and pass."""
    columns = [(m, p) for p in ("forward", "forward+backward")
               for m in ("scan-sequential", "scan-parallel", "gru")]
    names = [f"{m.removeprefix('scan-')} {'fwd' if p == 'forward' else 'fwd+bwd'}"
             for m, p in columns]
    print(f"\nmedian seconds per call (batch {rows[0]['batch']}, width {rows[0]['width']})")
    print("T".rjust(6) + "".join(n.rjust(20) for n in names))
    for steps in sorted({r["T"] for r in rows}):
        cells = {(r["model"], r["pass"]): r["median_s"] for r in rows if r["T"] == steps}
        print(str(steps).rjust(6) + "".join(f"{cells[c]:>20.4f}" for c in columns))


def environment(args):
    return {
        **run_metadata(["command", "date", "jax_version", "backend", "devices", "cpu_count",
                        "load_average_at_start", "platform", "python"]),
        "batch": args.batch,
        "state": args.state,
        "repeats": args.repeats,
        "reset_rate": args.reset_rate,
        "note": ("scan: complex64 state of width `state`, time-invariant a, loss "
                 "sum |x|^2, gradients w.r.t. a, b, x0; gru: flax GRUCell with "
                 "`state` units and inputs, gradients w.r.t. params and inputs. "
                 "first_call_s = compilation + one call; median_s / min_s over the "
                 "later calls. The CPU is shared with other jobs (see load "
                 "averages), so CPU timings are noisy."),
    }


def write(rows, meta, out):
    # Accelerator runs get their own files so they never overwrite the CPU record.
    stem = "scan_speed" if meta["backend"] == "cpu" else f"scan_speed_{meta['backend']}"
    summary = (f"{meta['command']} | {meta['date']} | jax {meta['jax_version']} | "
               f"{meta['backend']} | {meta['cpu_count']} cpus")
    print()
    write_record(out / stem, {"environment": meta, "results": rows}, rows, FIELDS, [summary])


def main():
    args = parse_args()
    meta = environment(args)
    start = time.perf_counter()
    rows = benchmark(args)
    meta["total_seconds"] = round(time.perf_counter() - start, 1)
    meta["load_average_at_end"] = load_average()
    print_table(rows)
    write(rows, meta, args.out)


if __name__ == "__main__":
    main()
