"""Optimisers (issue 10), float32, one process, interleaved repeats:

1. Step time of SOAP and Shampoo (precondition_frequency 10) against `optax.adam` on the same
   model: an MLP 64-256-256-10 with softmax cross-entropy on the 8x8 digits, one full training
   step (loss, gradient, update, apply) per step; each call runs 10 steps in a `lax.scan`, so
   exactly one preconditioner refresh falls in each call (the amortised cost). Batch 256 and
   the full training set (1437). optax muon and Turbo-Muon ride along.
2. Newton-Schulz to equal orthogonality: optax muon's orthogonalisation (5 quintic steps,
   Frobenius start) against `newton_schulz(preconditioned=True)` with the fewest steps whose
   smallest singular value reaches that of optax's five (see `newton_schulz_time` for why that
   measure); Gaussian and heavy-tailed (Student t) matrices, 512x512 and 256x1024.
3. `estimate_gradient(fn, TwoPoint(q), ...)` against the same estimator written by hand as a
   `fori_loop` over directions regenerated from `fold_in(key, i)` (the physical reference),
   and by hand with all q directions at once (`vmap`, memory O(q d)); the MLP loss, q = 16.

Run: `python -m benchmarks.optimizers`.
"""

import os

# OpenBLAS (behind the LAPACK eigh and QR that JAX's CPU backend calls) spins its threads; on a
# small shared machine that made a 256x256 eigh or QR take 1.5 s instead of 4 ms (measured on
# the 2-core machine of RESULTS.md). One thread, set before NumPy and JAX load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from optax.contrib._muon import orthogonalize_via_newton_schulz  # noqa: E402

import jaxsolve as js  # noqa: E402

from ._harness import measure_interleaved, print_table  # noqa: E402

warnings.filterwarnings("ignore")
DTYPE = jnp.float32
WIDTH = 256
STEPS_PER_CALL = 10
MUON = (3.4445, -4.7750, 2.0315)


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:1437] / 16.0, y[:1437]
    return jnp.asarray(X, DTYPE), jnp.asarray(y, jnp.int32)


def init_mlp(key, widths):
    keys = jax.random.split(key, len(widths) - 1)
    return [
        {
            "w": jax.random.normal(k, (a, b), DTYPE) / np.sqrt(a),
            "b": jnp.zeros((b,), DTYPE),
        }
        for k, a, b in zip(keys, widths, widths[1:], strict=False)
    ]


def mlp_loss(params, X, y):
    h = X
    for layer in params[:-1]:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    logits = h @ params[-1]["w"] + params[-1]["b"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


# --- 1. step time ---------------------------------------------------------------------------


def make_run(tx):
    def run(params, state, X, y):
        def body(carry, _):
            params, state = carry
            value, grads = jax.value_and_grad(mlp_loss)(params, X, y)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        (params, state), values = jax.lax.scan(body, (params, state), None, STEPS_PER_CALL)
        return params, state, values[-1]

    return jax.jit(run)


def step_time(batch):
    X, y = digits()
    X, y = X[:batch], y[:batch]
    params = init_mlp(jax.random.key(0), [64, WIDTH, WIDTH, 10])
    txs = {
        "optax adam": optax.adam(1e-3),
        "jaxsolve soap (freq 10)": js.optimizers.soap(1e-3, precondition_frequency=10),
        "jaxsolve shampoo (freq 10)": js.optimizers.shampoo(1e-3, precondition_frequency=10),
        "optax muon (5 NS steps)": optax.contrib.muon(0.02),
        "jaxsolve turbo_muon (4 NS steps)": js.optimizers.turbo_muon(0.02),
    }
    entries = []
    for name, tx in txs.items():
        run = make_run(tx)
        # one step first, so that each timed call (10 steps) holds one periodic refresh and not
        # the first step's eigh
        state = tx.init(params)
        grads = jax.grad(mlp_loss)(params, X, y)
        _, state = jax.jit(tx.update)(grads, state, params)
        entries.append((name, run, (params, state, X, y)))
    timings = measure_interleaved(entries, repeats=9)
    for timing, (_, run, args) in zip(timings, entries, strict=True):
        timing.run_s /= STEPS_PER_CALL
        timing.note = f"per step; loss after 11 steps {float(run(*args)[2]):.4f}"
    return print_table(
        f"Training step, MLP 64-{WIDTH}-{WIDTH}-10 on digits, batch {batch}, float32 "
        f"(run = per step, mean over {STEPS_PER_CALL} scanned steps)",
        timings,
        anchor="optax adam",
    )


# --- 2. Newton-Schulz -----------------------------------------------------------------------


def orthogonality_error(X):
    k = min(X.shape)
    gram = X @ X.T if X.shape[0] <= X.shape[1] else X.T @ X
    return float(jnp.linalg.norm(gram - jnp.eye(k, dtype=X.dtype)) / np.sqrt(k))


def smallest_singular_value(X):
    return float(np.linalg.svd(np.asarray(X, np.float64), compute_uv=False).min())


def polar_error(G, X):
    u, s, vt = np.linalg.svd(np.asarray(G, np.float64), full_matrices=False)
    return float(np.linalg.norm(np.asarray(X, np.float64) - u @ vt) / np.sqrt(s.size))


def newton_schulz_time(shape, kind):
    """Muon's quintic does not converge: it lifts every singular value into about [0.7, 1.2]
    and then oscillates there, so the RMS of X X^T - I settles at 0.3-0.4 whatever the start.
    What the steps buy is lifting the smallest singular values; "equal orthogonality" is
    therefore the smallest singular value (the largest 1 - sigma_i): the fewest AOL steps whose
    sigma_min is at least that of optax's five steps."""
    rng = np.random.default_rng(0)
    G = rng.standard_t(2.0, shape) if kind == "heavy-tailed" else rng.standard_normal(shape)
    G = jnp.asarray(G, DTYPE)
    coeffs = jnp.asarray(MUON, DTYPE)
    optax_ns = jax.jit(lambda g: orthogonalize_via_newton_schulz(g, coeffs, 5))
    # (unjitted here, so that the table's compile+first column is a fresh compile for all)
    target = smallest_singular_value(orthogonalize_via_newton_schulz(G, coeffs, 5))
    sigma_min = {
        k: smallest_singular_value(js.optimizers.newton_schulz(G, k, preconditioned=True))
        for k in range(1, 6)
    }
    steps = next((k for k, s in sigma_min.items() if s >= target), 5)
    turbo = jax.jit(lambda g: js.optimizers.newton_schulz(g, steps, preconditioned=True))
    turbo4 = jax.jit(lambda g: js.optimizers.newton_schulz(g, 4, preconditioned=True))
    ours5 = jax.jit(lambda g: js.optimizers.newton_schulz(g, 5, preconditioned=False))
    entries = [
        ("optax muon NS (5 steps)", optax_ns, (G,)),
        (f"jaxsolve turbo NS ({steps} steps)", turbo, (G,)),
        ("jaxsolve turbo NS (4 steps, default)", turbo4, (G,)),
        ("jaxsolve plain NS (5 steps)", ours5, (G,)),
    ]
    timings = measure_interleaved(entries, repeats=9)
    for timing, (_, fn, args) in zip(timings, entries, strict=True):
        X = fn(*args)
        timing.note = (
            f"sigma_min {smallest_singular_value(X):.3f}, RMS(XX^T-I) "
            f"{orthogonality_error(X):.3f}, polar error {polar_error(G, X):.3f}"
        )
    return print_table(
        f"Newton-Schulz on a {shape[0]}x{shape[1]} {kind} matrix, float32: equal smallest "
        f"singular value (optax 5 steps: {target:.3f}; AOL by steps: "
        + ", ".join(f"{k}: {v:.3f}" for k, v in sigma_min.items())
        + ")",
        timings,
        anchor="optax muon NS (5 steps)",
    )


# --- 3. estimators --------------------------------------------------------------------------


def estimator_time(num_directions=16, smoothing=1e-3):
    X, y = digits()
    params = init_mlp(jax.random.key(1), [64, 64, 10])
    key = jax.random.key(2)
    flat, unravel = ravel_pytree(params)
    fn = lambda flat_params: mlp_loss(unravel(flat_params), X, y)  # noqa: E731

    @jax.jit
    def jaxsolve_estimate(params, key):
        estimator = js.optimizers.TwoPoint(num_directions=num_directions, smoothing=smoothing)
        return js.optimizers.estimate_gradient(mlp_loss, estimator, params, key, X, y)

    @jax.jit
    def loop_estimate(flat, key):
        mu = jnp.asarray(smoothing, DTYPE)

        def body(i, total):
            u = jax.random.normal(jax.random.fold_in(key, i), flat.shape, DTYPE)
            slope = (fn(flat + mu * u) - fn(flat - mu * u)) / (2 * mu)
            return total + slope * u

        total = jax.lax.fori_loop(0, num_directions, body, jnp.zeros_like(flat))
        return fn(flat), total / num_directions

    @jax.jit
    def vmap_estimate(flat, key):
        mu = jnp.asarray(smoothing, DTYPE)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_directions))
        u = jax.vmap(lambda k: jax.random.normal(k, flat.shape, DTYPE))(keys)
        slopes = (jax.vmap(fn)(flat + mu * u) - jax.vmap(fn)(flat - mu * u)) / (2 * mu)
        return fn(flat), slopes @ u / num_directions

    value, grad = jaxsolve_estimate(params, key)
    ref_value, ref_grad = loop_estimate(flat, key)
    difference = float(jnp.max(jnp.abs(ravel_pytree(grad)[0] - ref_grad)))
    entries = [
        ("hand-written fori_loop", loop_estimate, (flat, key)),
        ("jaxsolve estimate_gradient", jaxsolve_estimate, (params, key)),
        ("hand-written vmap (all directions)", vmap_estimate, (flat, key)),
    ]
    timings = measure_interleaved(entries, repeats=9)
    timings[1].note = f"max |grad - loop grad| {difference:.1e}"
    return print_table(
        f"TwoPoint estimate, q = {num_directions}, MLP 64-64-10 loss on 1437 digits "
        f"({flat.size} parameters), float32",
        timings,
        anchor="hand-written fori_loop",
    )


def main():
    for batch in (256, 1437):
        step_time(batch)
    for shape in ((512, 512), (256, 1024)):
        for kind in ("gaussian", "heavy-tailed"):
            newton_schulz_time(shape, kind)
    if hasattr(js.optimizers, "estimate_gradient"):
        estimator_time()
    else:
        print("\njs.optimizers.estimate_gradient is missing: no estimator row")


if __name__ == "__main__":
    main()
