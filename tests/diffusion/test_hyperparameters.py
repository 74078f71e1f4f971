"""Float hyperparameters of every public diffusion module are traced: no recompilation.

Each case jits one function that takes the module as an argument, calls it with two float
values, and asserts a single trace (`eqx.debug.assert_max_traces`) and, where the value enters
the numbers, that the two outputs differ (so the value is really used, not frozen).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

D = js.diffusion
X_T = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)))
KEY = jax.random.key(7)


class _Net(eqx.Module):
    """A small parametric noise predictor that does not close over any schedule."""

    weight: jax.Array

    def __call__(self, x, t):
        return jnp.tanh(self.weight * x) * (1.0 + t)


class _CondNet(eqx.Module):
    weight: jax.Array

    def __call__(self, x, t, cond):
        return jnp.tanh(self.weight * x) + cond["shift"] * t


NET = _Net(jnp.asarray(0.8))


def _traced_once(fn):
    return eqx.filter_jit(eqx.debug.assert_max_traces(fn, max_traces=1))


def _sample(sampler, model, key=None, guidance=None, num_steps=4):
    ts = D.timesteps(model.schedule, num_steps)
    return D.sample(sampler, model, X_T, ts, key=key, guidance=guidance)


SAMPLER_CASES = [
    ("DDIM.eta", lambda v: D.DDIM(eta=v), (0.2, 0.7), True),
    ("EulerEDM.s_churn", lambda v: D.EulerEDM(s_churn=v), (1.0, 3.0), True),
    ("HeunEDM.s_tmax", lambda v: D.HeunEDM(s_churn=2.0, s_tmax=v), (1.0, 50.0), True),
    ("BDIA.gamma", lambda v: D.BDIA(gamma=v), (0.5, 1.0), True),
    ("GHVB.beta", lambda v: D.GHVB(order=2, beta=v), (0.5, 0.9), True),
    ("HeavyBall.beta", lambda v: D.HeavyBall(order=2, beta=v), (0.5, 0.9), True),
    # The Brownian tree's depth, ceil(log2(range / tol)) = 7 here, is the same for both values,
    # so the noise (and the sample) is the same too; only a new depth is a new program.
    ("SDEDPMSolverPP.tol", lambda v: D.SDEDPMSolverPP(tol=v), (0.5, 0.6), False),
]


@pytest.mark.parametrize(
    "make, values, differ", [c[1:] for c in SAMPLER_CASES], ids=[c[0] for c in SAMPLER_CASES]
)
def test_sampler_hyperparameters_do_not_retrace(make, values, differ):
    model = D.Model(NET, D.VPLinear())
    run = _traced_once(lambda sampler, key: _sample(sampler, model, key=key))
    a, b = (run(make(v), KEY) for v in values)
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    assert (not np.allclose(a, b, rtol=1e-9, atol=1e-12)) == differ


SCHEDULE_CASES = [
    ("VPLinear.beta_min", lambda v: D.VPLinear(beta_min=v), (0.1, 0.3)),
    ("VPLinear.beta_max", lambda v: D.VPLinear(beta_max=v), (20.0, 15.0)),
    ("VPCosine.s", lambda v: D.VPCosine(s=v), (0.008, 0.02)),
    ("VPCosine.logsnr_min", lambda v: D.VPCosine(logsnr_min=v), (-5.0, -4.0)),
    ("VE.sigma_min", lambda v: D.VE(sigma_min=v), (0.002, 0.01)),
    ("VE.sigma_max", lambda v: D.VE(sigma_max=v), (80.0, 40.0)),
    ("FlowMatching.shift", lambda v: D.FlowMatching(shift=v), (1.0, 3.0)),
]


def _schedule_outputs(schedule):
    # The default grid depends on the parameters for VPCosine (its clipping time), so it is
    # built inside the jitted function from the traced schedule.
    ts = D.timesteps(schedule, 4)
    lam = schedule.logsnr(ts)
    return ts, schedule.alpha(ts), schedule.sigma(ts), lam, schedule.t_of_logsnr(lam)


@pytest.mark.parametrize(
    "make, values", [c[1:] for c in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES]
)
def test_schedule_hyperparameters_do_not_retrace(make, values):
    run = _traced_once(_schedule_outputs)
    for value in values:
        schedule = make(value)
        traced = run(schedule)
        for got, expected in zip(traced, _schedule_outputs(schedule)):
            np.testing.assert_allclose(got, expected, rtol=1e-12)
        np.testing.assert_allclose(traced[-1], traced[0], rtol=1e-9)  # t_of_logsnr inverts
    assert not np.allclose(run(make(values[0]))[2], run(make(values[1]))[2])  # sigma


def test_schedule_hyperparameters_reach_the_sampler():
    run = _traced_once(lambda schedule: _sample(D.DPMSolverPP(), D.Model(NET, schedule)))
    a, b = run(D.VPCosine(s=0.008)), run(D.VPCosine(s=0.02))
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)


def test_guidance_scale_does_not_retrace():
    model = D.Model(_CondNet(jnp.asarray(0.8)), D.VPLinear())
    cond = {"shift": jnp.asarray(1.0), "label": "cat"}  # a pytree with a non-array leaf
    uncond = {"shift": jnp.asarray(0.0), "label": "none"}
    run = _traced_once(lambda guidance: _sample(D.DDIM(), model, guidance=guidance))
    a = run(D.Guidance(cond, uncond, scale=1.5))
    b = run(D.Guidance(cond, uncond, scale=4.0))
    assert not np.allclose(a, b)
    # Guiding is affine in the scale: the sample at scale 1.5 matches its eager value.
    np.testing.assert_allclose(
        a, _sample(D.DDIM(), model, guidance=D.Guidance(cond, uncond, 1.5)), rtol=1e-12
    )


def test_ddim_eta_traced_without_key():
    """A traced `eta` cannot decide stochasticity in Python: without a key it must be 0."""
    model = D.Model(NET, D.VPLinear())
    run = eqx.filter_jit(lambda sampler, key: _sample(sampler, model, key=key))
    deterministic = _sample(D.DDIM(), model)
    np.testing.assert_allclose(run(D.DDIM(0.0), None), deterministic, rtol=1e-13)
    # eta = 0 with a key: the noise term vanishes exactly.
    np.testing.assert_allclose(run(D.DDIM(0.0), KEY), deterministic, rtol=1e-13, atol=1e-15)
    # eta > 0 traced and no key: a clear error at run time, not a silently deterministic DDIM.
    with pytest.raises(Exception, match="eta"):
        jax.block_until_ready(run(D.DDIM(0.5), None))
    # Eagerly, the concrete value is checked before tracing.
    with pytest.raises(ValueError, match="key"):
        _sample(D.DDIM(0.5), model)
    # A traced eta matches the eager stochastic sampler.
    np.testing.assert_allclose(run(D.DDIM(0.5), KEY), _sample(D.DDIM(0.5), model, key=KEY))
