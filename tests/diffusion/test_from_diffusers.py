"""`from_diffusers` without torch: grids, errors, and behaviour against closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}


@pytest.mark.parametrize(
    "config, option",
    [
        # diffusers' RK warm-up is off its midpoints for an odd T // n (here 1010 // 10)
        ({"_class_name": "PNDMScheduler", "num_train_timesteps": 1010}, "skip_prk_steps"),
        ({"_class_name": "PNDMScheduler", "prediction_type": "sample"}, "prediction_type"),
        ({"_class_name": "EulerDiscreteScheduler", "thresholding": True}, "thresholding"),
        (
            {"_class_name": "HeunDiscreteScheduler", "rescale_betas_zero_snr": True},
            "rescale_betas_zero_snr",
        ),
        ({"_class_name": "DPMSolverMultistepScheduler", "solver_type": "bh2"}, "solver_type"),
        (
            {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"},
            "algorithm_type",
        ),
        (
            {"_class_name": "DPMSolverSinglestepScheduler", "use_beta_sigmas": True},
            "use_beta_sigmas",
        ),
        (
            {"_class_name": "UniPCMultistepScheduler", "predict_x0": False, "thresholding": True},
            "thresholding",
        ),
        (
            {
                "_class_name": "UniPCMultistepScheduler",
                "solver_p": {"_class_name": "DDIMScheduler"},
            },
            "solver_p",
        ),
        ({"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "odd"}, "timestep_spacing"),
        ({"_class_name": "DDIMScheduler", "prediction_type": "flow"}, "prediction_type"),
    ],
)
def test_unsupported_options_raise_naming_them(config, option):
    with pytest.raises(ValueError, match=option):
        js.diffusion.from_diffusers(config, 10)


def test_ddim_grids():
    # leading with steps_offset: t = 901, 801, ..., 1, then alpha = 1 (set_alpha_to_one)
    _, sampler, ts = js.diffusion.from_diffusers(
        {"_class_name": "DDIMScheduler", "steps_offset": 1, "clip_sample": False}, 10
    )
    k = np.arange(901, 0, -100)
    assert np.allclose(ts, np.append((k + 1) / 1000, 0.0), atol=0, rtol=1e-15)
    assert sampler.stride is None and sampler.clip_sample is None
    # linspace steps to t - T // n, not to the next grid point
    _, sampler, ts = js.diffusion.from_diffusers(
        {"_class_name": "DDIMScheduler", "timestep_spacing": "linspace"}, 10
    )
    k = np.linspace(0, 999, 10).round()[::-1]
    assert np.allclose(ts[:-1], (k + 1) / 1000) and float(sampler.stride) == 0.1
    assert float(sampler.clip_sample) == 1.0  # diffusers' DDIM clips by default


def test_ddim_stride_is_ddim_to_the_offset_time():
    """One DDIM step with a stride lands where a plain DDIM step to ts[0] - stride lands."""
    sched = js.diffusion.VPDiscrete.ddpm_linear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 0.5) / sched.sigma(t), sched)
    x = jnp.linspace(-1.0, 1.0, 4)
    ts = jnp.array([0.9, 0.85, 0.0])
    state = js.diffusion.DDIM(stride=0.2).init(model, x, ts, None)
    got = js.diffusion.DDIM(stride=0.2).step(model, ts, 0, state).x
    want = js.diffusion.sample(js.diffusion.DDIM(), model, x, jnp.array([0.9, 0.7]))
    assert jnp.allclose(got, want, rtol=1e-13)


def test_dpm_grid_and_closed_form():
    config = {"_class_name": "DPMSolverMultistepScheduler", **SD, "solver_order": 3}
    sched, sampler, ts = js.diffusion.from_diffusers(config, 12)
    k = np.linspace(0, 999, 13).round()[::-1][:-1]
    assert np.allclose(ts, np.append((k + 1) / 1000, 0.0), rtol=1e-13)
    assert sampler.third_order == "reference" and sampler.order == 3
    # data all at 0.5: the exact model is denoised exactly, whatever the solver
    model = js.diffusion.from_diffusers_model(
        lambda x, k: (x - sched.alpha((k + 1) / 1000) * 0.5) / sched.sigma((k + 1) / 1000),
        config,
    )
    x0 = js.diffusion.sample(sampler, model, jnp.linspace(-2.0, 2.0, 5), ts)
    assert jnp.allclose(x0, 0.5, atol=1e-10)


def test_karras_grid_and_euler_sigma_interpolation():
    cfg = {"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}
    sched, sampler, ts = js.diffusion.from_diffusers(cfg, 8)
    s = sched.sigma(ts) / sched.alpha(ts)
    ratio = np.diff(np.asarray(s[:-1]) ** (1 / 7))  # Karras: uniform in sigma^(1/7)
    assert np.allclose(ratio, ratio[0], rtol=1e-10) and float(s[-1]) == 0.0
    sched, _, ts = js.diffusion.from_diffusers({"_class_name": "EulerDiscreteScheduler"}, 25)
    assert sched.interpolation == "sigma"
    table = np.sqrt(1 / np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)) - 1)
    want = np.interp(np.linspace(0, 999, 25)[::-1], np.arange(1000), table)
    assert np.allclose(sched.sigma(ts[:-1]) / sched.alpha(ts[:-1]), want, rtol=1e-13)


def test_unipc_lower_order_final_always_and_finite_to_zero():
    # diffusers gives NaN for bh1 with a final step to zero, and a singular matrix for order 3
    # without lower_order_final; ours stay finite.
    sched = js.diffusion.VPDiscrete.scaled_linear()
    model = js.diffusion.Model(lambda x, t: (x - sched.alpha(t) * 0.5) / sched.sigma(t), sched)
    x_T = jnp.linspace(-2.0, 2.0, 5)
    for variant, lof in [("bh1", "always"), ("bh2", False), ("bh1", False)]:
        cfg = {
            "_class_name": "UniPCMultistepScheduler",
            "solver_order": 3,
            "solver_type": variant,
            "lower_order_final": lof is not False,
        }
        _, sampler, ts = js.diffusion.from_diffusers(cfg, 25)
        assert sampler.lower_order_final == lof
        x0 = js.diffusion.sample(sampler, model, x_T, ts)
        assert jnp.all(jnp.isfinite(x0)) and jnp.allclose(x0, 0.5, atol=1e-8)


def test_model_prediction_and_learned_variance():
    cfg = {
        "_class_name": "DDIMScheduler",
        "prediction_type": "v_prediction",
        "variance_type": "learned",
    }
    model = js.diffusion.from_diffusers_model(lambda x, k: jnp.concatenate([x, x + k], 1), cfg)
    assert model.prediction == "v"
    x = jnp.ones((2, 3, 4))
    assert model.fn(x, 0.5).shape == (2, 3, 4)
    assert jnp.allclose(model.fn(x, 0.5), x)


def test_vpdiscrete_zero_terminal_snr_and_interpolations():
    betas = np.linspace(1e-4, 0.02, 1000)
    betas[-1] = 1.0
    sched = js.diffusion.VPDiscrete(betas)
    t = jnp.array([0.5, 0.999, 0.9995, 1.0])
    assert float(sched.alpha(1.0)) == 0.0 and bool(jnp.all(jnp.isfinite(sched.sigma(t))))
    assert jnp.allclose(sched.t_of_logsnr(sched.logsnr(t[:-1])), t[:-1], rtol=1e-12)
    k = np.array([0, 10, 999])
    for interp in ("log_alpha", "sigma", "log_sigma"):
        s = js.diffusion.VPDiscrete.ddpm_linear()
        s = js.diffusion.VPDiscrete(np.linspace(1e-4, 0.02, 1000), interpolation=interp)
        abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
        assert np.allclose(s.alpha((k + 1) / 1000) ** 2, abar[k], rtol=1e-12)
    with pytest.raises(ValueError, match="interpolation"):
        js.diffusion.VPDiscrete(betas, interpolation="cubic")


def test_singlestep_orders_and_samplers_on_gaussian_data():
    from jaxsolve.diffusion._dpm_solver_pp import singlestep_orders

    assert singlestep_orders(3, 9, True) == [1, 2, 3, 1, 2, 3, 1, 2, 1]
    assert singlestep_orders(3, 10, True) == [1, 2, 3] * 3 + [1]
    assert singlestep_orders(2, 6, True) == [1, 2, 1, 2, 1, 1]
    assert singlestep_orders(3, 8, False) == [1, 2, 3, 1, 2, 3, 1, 2]
    # every new sampler option converges to the exact flow of Gaussian data as steps double
    sched = js.diffusion.VPLinear()
    mu, var = 0.5, 0.25

    def eps(x, t):
        a, s = sched.alpha(t), sched.sigma(t)
        return s * (x - a * mu) / (a**2 * var + s**2)

    model = js.diffusion.Model(eps, sched)
    x_T = jnp.linspace(-2.0, 2.0, 5)
    # the exact flow: x_t = a_t mu + sqrt(a_t^2 var + s_t^2) z, z fixed along the path
    t0, t1 = 1.0, 1e-3
    z = (x_T - sched.alpha(t0) * mu) / jnp.sqrt(sched.alpha(t0) ** 2 * var + sched.sigma(t0) ** 2)
    exact = sched.alpha(t1) * mu + jnp.sqrt(sched.alpha(t1) ** 2 * var + sched.sigma(t1) ** 2) * z
    samplers = [
        js.diffusion.DPMSolverPPSinglestep(order=3, solver_type="heun"),
        js.diffusion.DPMSolverPPSinglestep(order=2),
        js.diffusion.DPMSolverMultistep(order=3),
        js.diffusion.DPMSolverMultistep(order=2, solver_type="heun"),
        js.diffusion.DPMSolverPP(order=2, solver_type="heun"),
        js.diffusion.DEIS(order=3, basis="log_rho"),
        js.diffusion.PNDM(warmup="heun"),
    ]
    for sampler in samplers:
        errors = []
        for n in (12, 24):
            ts = js.diffusion.timesteps(sched, n)
            errors.append(
                float(jnp.max(jnp.abs(js.diffusion.sample(sampler, model, x_T, ts) - exact)))
            )
        assert errors[1] < errors[0] / 2.5 and errors[1] < 0.05, (sampler, errors)


@pytest.mark.parametrize(
    "config, option",
    [
        ({"_class_name": "DEISMultistepScheduler", "rescale_betas_zero_snr": True}, "rescale"),
        ({"_class_name": "DDIMScheduler", "use_karras_sigmas": True}, "use_karras_sigmas"),
        (
            {"_class_name": "EulerAncestralDiscreteScheduler", "use_beta_sigmas": True},
            "use_beta_sigmas",
        ),
        ({"_class_name": "HeunDiscreteScheduler", "sigma_min": 0.1}, "sigma_min"),
        ({"_class_name": "DPMSolverMultistepScheduler", "sigma_max": 5.0}, "sigma_max"),
        ({"_class_name": "UniPCMultistepScheduler", "use_lu_lambdas": True}, "use_lu_lambdas"),
        (
            {"_class_name": "DEISMultistepScheduler", "use_exponential_sigmas": True},
            "use_exponential_sigmas",
        ),
        (
            {"_class_name": "DPMSolverSinglestepScheduler", "use_exponential_sigmas": True},
            "use_exponential_sigmas",
        ),
        (
            {
                "_class_name": "UniPCMultistepScheduler",
                "use_beta_sigmas": True,
                "final_sigmas_type": "sigma_min",
            },
            "final_sigmas_type",
        ),
        (
            {
                "_class_name": "DPMSolverMultistepScheduler",
                "euler_at_final": True,
                "final_sigmas_type": "sigma_min",
                "lower_order_final": False,
            },
            "euler_at_final",
        ),
        (  # linear DDPM betas: diffusers' 2**-24 floor exceeds alphas_cumprod[-2]
            {"_class_name": "EulerDiscreteScheduler", "rescale_betas_zero_snr": True},
            "rescale_betas_zero_snr",
        ),
        (
            {"_class_name": "EulerDiscreteScheduler", "interpolation_type": "cubic"},
            "interpolation_type",
        ),
        ({"_class_name": "EulerDiscreteScheduler", "timestep_type": "x"}, "timestep_type"),
        (
            {
                "_class_name": "EulerDiscreteScheduler",
                "use_beta_sigmas": True,
                "use_karras_sigmas": True,
            },
            "at most one",
        ),
    ],
)
def test_grid_options_raise_naming_them(config, option):
    with pytest.raises(ValueError, match=option):
        js.diffusion.from_diffusers(config, 20)


def test_zero_snr_ddim_starts_at_alpha_zero():
    config = {
        "_class_name": "DDIMScheduler",
        **SD,
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
    }
    sched, sampler, ts = js.diffusion.from_diffusers(config, 10)
    assert float(ts[0]) == 1.0 and float(sched.alpha(ts[0])) == 0.0
    assert float(sched.logsnr(ts[0])) == -np.inf
    # the floored variant (DPM-Solver): alphas_cumprod[-1] = 2**-24 exactly
    sched = js.diffusion.from_diffusers(
        {**config, "_class_name": "DPMSolverMultistepScheduler"}, 10
    )[0]
    assert float(sched.alpha(1.0)) ** 2 == pytest.approx(2.0**-24, rel=1e-12)


def test_grid_options_give_their_noise_levels():
    base = {"_class_name": "DPMSolverMultistepScheduler", **SD}
    sched, _, ts = js.diffusion.from_diffusers({**base, "use_exponential_sigmas": True}, 10)
    s = np.exp(-np.asarray(sched.logsnr(ts[:-1])))
    np.testing.assert_allclose(np.diff(np.log(s)), np.diff(np.log(s))[0], rtol=1e-10)
    assert float(ts[-1]) == 0.0
    # Lu's lambdas are the same grid (uniform in log-SNR)
    ts_lu = js.diffusion.from_diffusers({**base, "use_lu_lambdas": True}, 10)[2]
    np.testing.assert_allclose(ts_lu, ts, rtol=1e-12)
    sched, _, ts = js.diffusion.from_diffusers({**base, "use_beta_sigmas": True}, 10)
    s = np.exp(-np.asarray(sched.logsnr(ts[:-1])))
    np.testing.assert_allclose(s, js.diffusion.beta_sigmas(s[-1], s[0], 10), rtol=1e-10)
    # Euler with sigma_min / sigma_max overrides of its Karras grid
    config = {
        "_class_name": "EulerDiscreteScheduler",
        **SD,
        "use_karras_sigmas": True,
        "sigma_min": 0.1,
        "sigma_max": 8.0,
    }
    sched, _, ts = js.diffusion.from_diffusers(config, 6)
    s = np.exp(-np.asarray(sched.logsnr(ts[:-1])))
    np.testing.assert_allclose(s, js.diffusion.karras_sigmas(0.1, 8.0, 6), rtol=1e-10)
    # Euler's log-linear interpolation: n steps over n + 1 geometric levels, the last unused
    sched, _, ts = js.diffusion.from_diffusers(
        {"_class_name": "EulerDiscreteScheduler", **SD, "interpolation_type": "log_linear"}, 5
    )
    assert ts.shape == (6,) and float(ts[0]) == 1.0 and float(ts[-1]) > 0.0


def test_continuous_timestep_is_quarter_log_sigma():
    config = {
        "_class_name": "EulerDiscreteScheduler",
        **SD,
        "timestep_type": "continuous",
        "prediction_type": "v_prediction",
    }
    sched = js.diffusion.from_diffusers(config, 10)[0]
    seen = []
    model = js.diffusion.from_diffusers_model(lambda x, k: seen.append(k) or 0 * x, config)
    model.x0(jnp.ones(2), 0.5)
    s = float(sched.sigma(0.5) / sched.alpha(0.5))
    assert float(seen[0]) == pytest.approx(0.25 * np.log(s), rel=1e-12)


FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}


def test_flow_configs_map_to_flow_matching():
    config = {"_class_name": "UniPCMultistepScheduler", **FLOW, "flow_shift": 3.0}
    sched, sampler, ts = js.diffusion.from_diffusers(config, 10)
    assert isinstance(sched, js.diffusion.FlowMatching) and float(ts[-1]) == 0.0
    base = np.linspace(1.0, 1e-3, 11)[:-1]
    expected = js.diffusion.shifted_flow_sigmas(base, 3.0)
    expected[0] -= 1e-6  # diffusers keeps UniPC's first level off t = 1
    np.testing.assert_allclose(ts[:-1], expected, rtol=1e-14)
    # dynamic shifting: `mu` required, and exp(mu) = the shift
    dynamic = {**config, "use_dynamic_shifting": True}
    with pytest.raises(ValueError, match="mu"):
        js.diffusion.from_diffusers(dynamic, 10)
    ts_mu = js.diffusion.from_diffusers(dynamic, 10, mu=float(np.log(3.0)))[2]
    np.testing.assert_allclose(ts_mu, ts, rtol=1e-13)
    with pytest.raises(ValueError, match="mu"):
        js.diffusion.from_diffusers(config, 10, mu=0.5)
    # a velocity network of the diffusers timestep sigma * T, exact for data at 0.5
    seen = []

    def v_net(x, k):
        seen.append(k)
        return (x - 0.5) / (k / 1000.0)

    model = js.diffusion.from_diffusers_model(v_net, config)
    assert model.prediction == "velocity"
    x0 = js.diffusion.sample(sampler, model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 0.5, atol=1e-9)
    # flow-matching Euler: DDIM on FlowMatching()
    sched, sampler, ts = js.diffusion.from_diffusers(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, 8
    )
    assert isinstance(sampler, js.diffusion.DDIM) and ts.shape == (9,) and float(ts[0]) == 1.0


@pytest.mark.parametrize(
    "config, option",
    [
        ({"_class_name": "DDIMScheduler", "use_flow_sigmas": True}, "use_flow_sigmas"),
        ({"_class_name": "DEISMultistepScheduler", **FLOW}, "use_flow_sigmas"),
        (
            {
                "_class_name": "DPMSolverMultistepScheduler",
                **FLOW,
                "prediction_type": "v_prediction",
            },
            "prediction_type",
        ),
        (
            {"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "flow_prediction"},
            "prediction_type",
        ),
        (
            {"_class_name": "DPMSolverMultistepScheduler", **FLOW, "use_karras_sigmas": True},
            "use_karras_sigmas",
        ),
        (
            {"_class_name": "UniPCMultistepScheduler", **FLOW, "final_sigmas_type": "sigma_min"},
            "final_sigmas_type",
        ),
        ({"_class_name": "DPMSolverMultistepScheduler", "shift_terminal": 0.1}, "shift_terminal"),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "invert_sigmas": True},
            "invert_sigmas",
        ),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": True},
            "stochastic_sampling",
        ),
    ],
)
def test_flow_options_raise_naming_them(config, option):
    with pytest.raises(ValueError, match=option):
        js.diffusion.from_diffusers(config, 10)
