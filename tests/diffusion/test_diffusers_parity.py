"""Parity with Hugging Face diffusers' schedulers (optional: `pip install jaxsolve[parity]`).

Diffusers' scheduler modules are run in float64 (their `torch.float32` / `np.float32` casts are
redirected to float64 inside those modules only) on the exact noise prediction of Gaussian
data, and `from_diffusers` must reproduce the whole sampling loop to 1e-12.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve as js

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

MU, STD = 0.7, 0.6  # the data: independent N(MU, STD^2) per coordinate
TOL = 1e-12


class _Float64Proxy:
    """A module stand-in whose `float32` is `float64` (diffusers casts its tables to float32)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name == "float32":
            return self._module.float64
        return getattr(self._module, name)


def _float64_scheduler(cls_name, config):
    module = importlib.import_module(diffusers.__name__)
    cls = getattr(module, cls_name)
    source = importlib.import_module(cls.__module__)
    saved = source.torch, source.np, getattr(source, "randn_tensor", None)
    source.torch, source.np = _Float64Proxy(torch), _Float64Proxy(np)
    try:
        scheduler = cls(**{k: v for k, v in config.items() if k != "_class_name"})
    except BaseException:
        source.torch, source.np, _ = saved
        raise
    return scheduler, source, saved


def _eps(x, alpha, sigma):
    return sigma * (x - alpha * MU) / (alpha**2 * STD**2 + sigma**2)


def _output(eps, x, alpha, sigma, prediction):
    x0 = (x - sigma * eps) / alpha
    return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction]


KEY = jax.random.key(3)


def _jax_noise(step, shape):
    """The noise of step `step` as jaxsolve's DDIM draws it (fed to diffusers too)."""
    z = jax.random.normal(jax.random.fold_in(KEY, step), shape, jnp.float64)
    return torch.tensor(np.asarray(z), dtype=torch.float64)


def run_diffusers(config, num_steps, noise):
    """Diffusers' loop (as in its pipelines) on the exact model; returns the final sample."""
    name = config["_class_name"]
    prediction = config.get("prediction_type", "epsilon")
    scheduler, source, saved = _float64_scheduler(name, config)
    try:
        scheduler.set_timesteps(num_steps)
        x = torch.tensor(noise, dtype=torch.float64) * float(scheduler.init_noise_sigma)
        if name == "EulerAncestralDiscreteScheduler":  # diffusers draws the noise we draw
            counter = iter(range(10**6))
            source.randn_tensor = lambda shape, **kw: _jax_noise(next(counter), tuple(shape))
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            if hasattr(scheduler, "sigmas") and name not in ("DDIMScheduler", "PNDMScheduler"):
                index = scheduler.step_index if scheduler.step_index is not None else 0
                s = float(scheduler.sigmas[index])
                alpha = 1.0 / np.sqrt(1.0 + s * s)
                sigma = s * alpha
            else:
                abar = float(scheduler.alphas_cumprod[int(t)])
                alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
            eps = _eps(x_in, alpha, sigma)
            out = _output(eps, x_in, alpha, sigma, prediction)
            x = scheduler.step(out, t, x).prev_sample
        return x.numpy(), float(scheduler.init_noise_sigma)
    finally:
        source.torch, source.np, randn = saved
        if randn is not None:
            source.randn_tensor = randn


def run_jaxsolve(config, num_steps, noise, init_noise_sigma):
    sched, sampler, ts = js.diffusion.from_diffusers(config, num_steps)
    prediction = config.get("prediction_type", "epsilon")

    def net(x, k):
        t = (k + 1.0) / (sched.t_grid.shape[0] - 1)
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        return _output(_eps(x, alpha, sigma), x, alpha, sigma, prediction)

    model = js.diffusion.from_diffusers_model(net, config)
    sigma_scale = config["_class_name"].startswith(("Euler", "Heun"))
    x_T = jnp.asarray(noise) * init_noise_sigma
    if sigma_scale:  # Euler/Heun latents live in x / alpha
        x_T = x_T * sched.alpha(ts[0])
    key = KEY if sampler.is_stochastic() else None
    x0 = js.diffusion.sample(sampler, model, x_T, ts, key=key)
    if sigma_scale:
        x0 = x0 / sched.alpha(ts[-1])
    return np.asarray(x0)


SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CASES = [
    ("DDIMScheduler", {}, 10),
    ("DDIMScheduler", {"clip_sample": False}, 10),
    ("DDIMScheduler", {**SD, "timestep_spacing": "leading", "steps_offset": 1}, 25),
    ("DDIMScheduler", {"timestep_spacing": "linspace"}, 10),
    ("DDIMScheduler", {"timestep_spacing": "trailing", "prediction_type": "v_prediction"}, 7),
    (
        "DDIMScheduler",
        {"set_alpha_to_one": False, "prediction_type": "sample", "clip_sample": False},
        10,
    ),
    ("DDIMScheduler", {"thresholding": True, "sample_max_value": 1.2}, 10),
    ("DPMSolverMultistepScheduler", {"solver_order": 1}, 10),
    ("DPMSolverMultistepScheduler", {"thresholding": True, "sample_max_value": 1.5}, 10),
    ("UniPCMultistepScheduler", {"thresholding": True, "dynamic_thresholding_ratio": 0.9}, 10),
    ("DEISMultistepScheduler", {"thresholding": True, "solver_order": 2}, 10),
    ("DPMSolverMultistepScheduler", {**SD, "solver_order": 2}, 20),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, 10),
    ("DPMSolverMultistepScheduler", {"solver_type": "heun"}, 10),
    ("DPMSolverMultistepScheduler", {**SD, "solver_type": "heun", "use_karras_sigmas": True}, 20),
    (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min"},
        10,
    ),
    (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver", "solver_type": "heun", "final_sigmas_type": "sigma_min"},
        20,
    ),
    (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
        25,
    ),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}, 25),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "final_sigmas_type": "sigma_min"}, 25),
    ("DPMSolverMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}, 15),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}, 12),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading", "steps_offset": 1}, 12),
    ("DPMSolverMultistepScheduler", {"lambda_min_clipped": -5.1}, 12),
    ("DPMSolverSinglestepScheduler", {"solver_order": 2}, 10),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3}, 10),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "solver_type": "heun"}, 12),
    ("DPMSolverSinglestepScheduler", {**SD, "solver_order": 3, "lower_order_final": True}, 20),
    (
        "DPMSolverSinglestepScheduler",
        {"solver_order": 2, "lower_order_final": True, "final_sigmas_type": "sigma_min"},
        11,
    ),
    ("DPMSolverSinglestepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, 15),
    ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2"}, 10),
    ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2"}, 25),
    (
        "UniPCMultistepScheduler",
        {"solver_order": 2, "solver_type": "bh1", "final_sigmas_type": "sigma_min"},
        25,
    ),
    (
        "UniPCMultistepScheduler",
        {"solver_order": 3, "solver_type": "bh2", "final_sigmas_type": "sigma_min"},
        25,
    ),
    ("UniPCMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}, 12),
    ("DEISMultistepScheduler", {"solver_order": 1}, 10),
    ("DEISMultistepScheduler", {"solver_order": 2}, 10),
    ("DEISMultistepScheduler", {"solver_order": 3}, 25),
    ("DEISMultistepScheduler", {**SD, "solver_order": 3, "timestep_spacing": "trailing"}, 12),
    ("PNDMScheduler", {"skip_prk_steps": True}, 10),
    ("PNDMScheduler", {**SD, "skip_prk_steps": True, "steps_offset": 1}, 25),
    ("PNDMScheduler", {"skip_prk_steps": True, "set_alpha_to_one": True}, 8),
    ("EulerDiscreteScheduler", {}, 10),
    ("EulerDiscreteScheduler", {**SD, "timestep_spacing": "leading", "steps_offset": 1}, 25),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True, "prediction_type": "v_prediction"}, 25),
    ("EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, 7),
    ("HeunDiscreteScheduler", {}, 10),
    ("EulerAncestralDiscreteScheduler", {}, 10),
    (
        "EulerAncestralDiscreteScheduler",
        {**SD, "timestep_spacing": "leading", "steps_offset": 1},
        25,
    ),
    (
        "EulerAncestralDiscreteScheduler",
        {"prediction_type": "v_prediction", "timestep_spacing": "trailing"},
        12,
    ),
    ("HeunDiscreteScheduler", {"use_karras_sigmas": True, "timestep_spacing": "leading"}, 12),
]
# Sampler options (UniPC predict_x0/disable_corrector/solver_p, PNDM warm-up, singlestep).
CASES_SAMPLER_OPTIONS = []
# Grid and schedule options (zero-SNR betas, beta/exponential/flow sigmas, Lu lambdas, ...).
CASES_GRID_OPTIONS = []
CASES = CASES + CASES_SAMPLER_OPTIONS + CASES_GRID_OPTIONS


def _case_id(case):
    name, options, n = case
    text = ",".join(f"{k}={v}" for k, v in options.items() if k not in SD)
    return f"{name}-{n}-{text}" if text else f"{name}-{n}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_parity(case):
    name, options, n = case
    config = {"_class_name": name, **options}
    assert jax.config.jax_enable_x64  # tests/conftest.py turns float64 on
    noise = np.random.default_rng(0).standard_normal((2, 3, 4))
    ref, init_sigma = run_diffusers(config, n, noise)
    ours = run_jaxsolve(config, n, noise, init_sigma)
    assert np.all(np.isfinite(ours))
    diff = float(np.max(np.abs(ours - ref)))
    print(f"PARITY {_case_id(case)} {diff:.2e}")
    assert diff <= TOL, diff
