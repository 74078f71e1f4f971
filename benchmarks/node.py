"""A neural-ODE training step vs diffrax: an equinox MLP vector field (2-32-32-2, softplus
hidden, tanh output) passed in `args`, Tsit5 + PID (rtol=1e-3, atol=1e-6, what diffrax users
typically pick), 40 save times, batch 16 via `vmap`, MSE loss; float32. Both libraries on their
defaults (jaxsolve: checkpointed adjoint, throw=True; diffrax: RecursiveCheckpointAdjoint).
Compile (first call) and run time of (a) the forward loss and (b) `eqx.filter_value_and_grad`,
batched and unbatched. The step counts and the losses are printed beside the times, and the
losses are asserted to agree (like for like). Run: `python -m benchmarks.node`."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import jaxsolve as js

from ._harness import measure_interleaved, print_table

warnings.filterwarnings("ignore")
d = js.diffeq
DTYPE = jnp.float32
BATCH, NUM_TIMES = 16, 40
DT0 = 0.05
# (rtol, atol, t_end): diffrax users' usual loose setting over [0, 1] (a handful of steps: the
# fixed overhead of the loop and its backward pass), and a tight one over [0, 10] (dozens of
# steps: the per-step cost).
CONFIGS = ((1e-3, 1e-6, 1.0), (1e-6, 1e-8, 10.0))
SPIRAL = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def make_problem(batch, t_end=1.0):
    model = eqx.nn.MLP(2, 2, 32, 2, activation=jax.nn.softplus, final_activation=jnp.tanh,
                       dtype=DTYPE, key=jax.random.key(0))  # fmt: skip
    rng = np.random.default_rng(0)
    y0s = rng.uniform(-1.0, 1.0, (batch, 2))
    ts = np.linspace(0.0, t_end, NUM_TIMES)
    flows = np.stack([scipy.linalg.expm(SPIRAL * t) for t in ts])
    targets = np.einsum("tij,bj->bti", flows, y0s)
    return model, jnp.asarray(ts, DTYPE), jnp.asarray(y0s, DTYPE), jnp.asarray(targets, DTYPE)


def field(t, y, mlp):
    return mlp(y)


def jaxsolve_trajectory(model, ts, y0, rtol, atol):
    sol = d.solve(d.ODETerm(field), d.Tsit5(), ts[0], ts[-1], y0, dt0=DT0, args=model,
                  saveat=d.SaveAt(ts=ts), controller=d.PIDController(rtol=rtol, atol=atol))  # fmt: skip
    return sol.ys, sol.stats["num_steps"]


def diffrax_trajectory(model, ts, y0, rtol, atol):
    import diffrax

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field), diffrax.Tsit5(), ts[0], ts[-1], DT0, y0, args=model,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=4096,
    )  # fmt: skip
    return sol.ys, sol.stats["num_steps"]


def make_loss(trajectory, batched, rtol, atol):
    def loss(model, ts, y0s, targets):
        if batched:
            ys, steps = jax.vmap(lambda y0: trajectory(model, ts, y0, rtol, atol))(y0s)
        else:
            ys, steps = trajectory(model, ts, y0s[0], rtol, atol)
            targets = targets[0]
        return jnp.mean((ys - targets) ** 2), steps

    return loss


def main():
    rows = {}
    for rtol, atol, t_end in CONFIGS:
        rows.update(run_config(rtol, atol, t_end))
    return rows


def run_config(rtol, atol, t_end):
    rows = {}
    for batched in (True, False):
        problem = make_problem(BATCH if batched else 1, t_end)
        label = f"batch {BATCH}" if batched else "unbatched"
        for what in ("forward loss", "value_and_grad"):
            entries, notes = [], {}
            for lib, trajectory in (("jaxsolve", jaxsolve_trajectory),
                                    ("diffrax", diffrax_trajectory)):  # fmt: skip
                loss = make_loss(trajectory, batched, rtol, atol)
                if what == "forward loss":
                    fn = eqx.filter_jit(loss)
                else:
                    fn = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))
                entries.append((f"{lib} {what} ({label})", fn, problem))
            # Timed in alternation, so that load changes on a shared machine hit both alike.
            timings = measure_interleaved(entries)
            for timing, (name, fn, _) in zip(timings, entries, strict=True):
                lib = name.split()[0]
                out = fn(*problem)
                value, steps = out if what == "forward loss" else out[0]
                notes[lib] = (float(value), np.asarray(steps))
                steps = np.asarray(steps)
                timing.note = f"loss {float(value):.6e}, steps {int(steps.max())}" + (
                    f" (lanes {int(steps.min())}-{int(steps.max())})" if steps.ndim else ""
                )
            a, b = notes["jaxsolve"][0], notes["diffrax"][0]
            assert abs(a - b) <= 1e-3 * abs(b), f"losses differ: jaxsolve {a}, diffrax {b}"
            rows[label, what, rtol] = print_table(
                f"Neural ODE {what}, {label}: MLP 2-32-32-2 in args, Tsit5 + PID "
                f"(rtol={rtol}, atol={atol}), t in [0, {t_end:g}], {NUM_TIMES} save times, "
                "float32",
                timings,
                anchor=f"diffrax {what} ({label})",
            )
    return rows


if __name__ == "__main__":
    main()
