"""`python -m benchmarks._first_call <module> <case>`: the first-call time (trace, compile and one
run) of `benchmarks.<module>.first_call_case(<case>)` in this fresh process, printed as JSON.

JAX's own one-time start-up (backend, first lowering of common primitives) is paid before the
timer by one trivial `jit`, and the benchmark module, which imports both libraries, is imported
before it too: the time is that entry's alone, not a share of whatever ran first in a process.
"""

import importlib
import json
import sys
import time

import jax
import jax.numpy as jnp


def main(module: str, case: str) -> float:
    jax.block_until_ready(jax.jit(lambda x: jnp.sin(x) + 1.0)(jnp.ones(3)))
    fn, args = importlib.import_module(f"benchmarks.{module}").first_call_case(case)
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
