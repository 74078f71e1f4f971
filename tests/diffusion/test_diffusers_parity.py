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
        scheduler = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
    except BaseException:
        source.torch, source.np, _ = saved
        raise
    return scheduler, source, saved


def _eps(x, alpha, sigma):
    return sigma * (x - alpha * MU) / (alpha**2 * STD**2 + sigma**2)


def _prediction(config):
    if config["_class_name"].startswith("FlowMatch"):  # always a velocity model
        return "flow_prediction"
    return config.get("prediction_type", "epsilon")


def _output(eps, x, alpha, sigma, prediction):
    # the posterior mean of x0 in closed form (finite at alpha = 0: zero terminal SNR)
    x0 = MU + alpha * STD**2 * (x - alpha * MU) / (alpha**2 * STD**2 + sigma**2)
    if (
        prediction == "flow_prediction"
    ):  # the velocity d x / d sigma of x = (1 - sigma) x0 + sigma eps
        return eps - x0
    return {"epsilon": eps, "v_prediction": alpha * eps - sigma * x0, "sample": x0}[prediction]


KEY = jax.random.key(3)


def _jax_noise(step, shape):
    """The noise of step `step` as jaxsolve's DDIM draws it (fed to diffusers too)."""
    z = jax.random.normal(jax.random.fold_in(KEY, step), shape, jnp.float64)
    return torch.tensor(np.asarray(z), dtype=torch.float64)


def run_diffusers(config, num_steps, noise):
    """Diffusers' loop (as in its pipelines) on the exact model; returns the final sample."""
    name = config["_class_name"]
    prediction = _prediction(config)
    inner = None
    if isinstance(config.get("solver_p"), dict):  # UniPC's solver_p: a live scheduler there
        spec = config["solver_p"]
        inner, inner_source, inner_saved = _float64_scheduler(spec["_class_name"], spec)
        config = {**config, "solver_p": inner}
    scheduler, source, saved = _float64_scheduler(name, config)
    try:
        default_dtype = torch.get_default_dtype()  # Euler's log-linear grid uses torch's default
        torch.set_default_dtype(torch.float64)
        try:
            mu = {"mu": config["_mu"]} if "_mu" in config else {}  # dynamic shifting's mu
            scheduler.set_timesteps(num_steps, **mu)
        finally:
            torch.set_default_dtype(default_dtype)
        init_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))  # (flow-matching Euler)
        x = torch.tensor(noise, dtype=torch.float64) * init_sigma
        if name == "EulerAncestralDiscreteScheduler":  # diffusers draws the noise we draw
            counter = iter(range(10**6))
            source.randn_tensor = lambda shape, **kw: _jax_noise(next(counter), tuple(shape))
        for t in scheduler.timesteps:
            x_in = (
                scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
            )
            if hasattr(scheduler, "sigmas") and name not in ("DDIMScheduler", "PNDMScheduler"):
                index = scheduler.step_index if scheduler.step_index is not None else 0
                s = float(scheduler.sigmas[index])
                alpha = 1.0 / np.sqrt(1.0 + s * s)
                sigma = s * alpha
                if config.get("use_flow_sigmas") or name.startswith(
                    "FlowMatch"
                ):  # flow matching: x = (1 - s) x0 + s eps
                    alpha, sigma = 1.0 - s, s
            else:
                abar = float(scheduler.alphas_cumprod[int(t)])
                alpha, sigma = np.sqrt(abar), np.sqrt(1.0 - abar)
            eps = _eps(x_in, alpha, sigma)
            out = _output(eps, x_in, alpha, sigma, prediction)
            x = scheduler.step(out, t, x).prev_sample
        return x.numpy(), init_sigma
    finally:
        source.torch, source.np, randn = saved
        if randn is not None:
            source.randn_tensor = randn
        if inner is not None:
            inner_source.torch, inner_source.np, _ = inner_saved


def run_jaxsolve(config, num_steps, noise, init_noise_sigma):
    sched, sampler, ts = js.diffusion.from_diffusers(config, num_steps, mu=config.get("_mu"))
    prediction = _prediction(config)
    flow = bool(config.get("use_flow_sigmas")) or config["_class_name"].startswith("FlowMatch")

    def net(x, k):
        t = k / 1000.0 if flow else (k + 1.0) / (sched.t_grid.shape[0] - 1)
        if config.get("timestep_type") == "continuous":  # k = log(sigma/alpha) / 4 there
            t = sched.t_of_logsnr(-4.0 * k)
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
CASES_SAMPLER_OPTIONS = [
    ("UniPCMultistepScheduler", {"predict_x0": False, "final_sigmas_type": "sigma_min"}, 10),
    (
        "UniPCMultistepScheduler",
        {"predict_x0": False, "solver_order": 3, "final_sigmas_type": "sigma_min"},
        25,
    ),
    (
        "UniPCMultistepScheduler",
        {
            **SD,
            "predict_x0": False,
            "solver_order": 3,
            "solver_type": "bh1",
            "prediction_type": "v_prediction",
            "final_sigmas_type": "sigma_min",
        },
        12,
    ),
    ("UniPCMultistepScheduler", {"disable_corrector": [0, 3, 7]}, 10),
    (
        "UniPCMultistepScheduler",
        {"disable_corrector": [1, 2], "solver_order": 3, "final_sigmas_type": "sigma_min"},
        25,
    ),
    (
        "UniPCMultistepScheduler",
        {"predict_x0": False, "disable_corrector": [4], "final_sigmas_type": "sigma_min"},
        12,
    ),
    (
        "UniPCMultistepScheduler",
        {"solver_p": {"_class_name": "DPMSolverMultistepScheduler", "solver_order": 2}},
        12,
    ),
    (
        "UniPCMultistepScheduler",
        {
            "solver_order": 3,
            "final_sigmas_type": "sigma_min",
            "solver_p": {
                "_class_name": "DPMSolverMultistepScheduler",
                "solver_order": 3,
                "final_sigmas_type": "sigma_min",
            },
        },
        25,
    ),
    (
        "UniPCMultistepScheduler",
        {
            "timestep_spacing": "trailing",
            "solver_p": {
                "_class_name": "DDIMScheduler",
                "timestep_spacing": "trailing",
                "clip_sample": False,
            },
        },
        10,
    ),
    (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver", "solver_order": 2, "final_sigmas_type": "sigma_min"},
        10,
    ),
    (
        "DPMSolverSinglestepScheduler",
        {"algorithm_type": "dpmsolver", "solver_order": 3, "final_sigmas_type": "sigma_min"},
        12,
    ),
    (
        "DPMSolverSinglestepScheduler",
        {
            **SD,
            "algorithm_type": "dpmsolver",
            "solver_order": 3,
            "solver_type": "heun",
            "lower_order_final": True,
            "prediction_type": "v_prediction",
            "final_sigmas_type": "sigma_min",
        },
        20,
    ),
    (
        "DPMSolverSinglestepScheduler",
        {
            "algorithm_type": "dpmsolver",
            "solver_type": "heun",
            "prediction_type": "sample",
            "final_sigmas_type": "sigma_min",
        },
        15,
    ),
    ("PNDMScheduler", {}, 10),
    ("PNDMScheduler", {**SD, "steps_offset": 1, "set_alpha_to_one": True}, 25),
    ("PNDMScheduler", {"timestep_spacing": "trailing"}, 20),
    ("PNDMScheduler", {"skip_prk_steps": True, "prediction_type": "v_prediction"}, 10),
    (
        "PNDMScheduler",
        {**SD, "skip_prk_steps": True, "steps_offset": 1, "prediction_type": "v_prediction"},
        25,
    ),
    ("PNDMScheduler", {"prediction_type": "v_prediction", "set_alpha_to_one": True}, 20),
]
# Grid and schedule options (zero-SNR betas, beta/exponential/flow sigmas, Lu lambdas, ...).
ZSNR = {"rescale_betas_zero_snr": True}
V = {"prediction_type": "v_prediction"}
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
FM = "FlowMatchEulerDiscreteScheduler"
CASES_GRID_OPTIONS = [
    (FM, {}, 10),
    (FM, {"shift": 3.0}, 20),
    (FM, {"use_dynamic_shifting": True, "_mu": 0.9}, 12),
    (FM, {"use_dynamic_shifting": True, "time_shift_type": "linear", "_mu": 2.0}, 12),
    (FM, {"shift": 3.0, "shift_terminal": 0.05}, 10),
    (FM, {"shift": 2.0, "use_karras_sigmas": True}, 10),
    (FM, {"use_exponential_sigmas": True}, 10),
    (FM, {"shift": 3.0, "use_beta_sigmas": True}, 10),
    ("DPMSolverMultistepScheduler", {**FLOW, "flow_shift": 3.0}, 10),
    ("DPMSolverMultistepScheduler", {**FLOW, "solver_order": 3, "flow_shift": 5.0}, 20),
    ("DPMSolverMultistepScheduler", {**FLOW, "use_dynamic_shifting": True, "_mu": 1.1}, 12),
    ("DPMSolverMultistepScheduler", {"use_flow_sigmas": True, "flow_shift": 2.0}, 10),
    ("UniPCMultistepScheduler", {**FLOW, "flow_shift": 3.0}, 10),
    ("UniPCMultistepScheduler", {**FLOW, "solver_order": 3}, 15),  # (bh1: NaN in diffusers)
    ("UniPCMultistepScheduler", {**FLOW, "use_dynamic_shifting": True, "_mu": 0.8}, 12),
    (
        "UniPCMultistepScheduler",
        {**FLOW, "use_dynamic_shifting": True, "time_shift_type": "linear", "_mu": 2.5},
        8,
    ),
    ("UniPCMultistepScheduler", {**FLOW, "flow_shift": 3.0, "shift_terminal": 0.1}, 10),
    ("DDIMScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "trailing"}, 10),
    ("DDIMScheduler", {**ZSNR, **V, "timestep_spacing": "trailing", "clip_sample": False}, 7),
    ("DDIMScheduler", {**SD, **ZSNR, "timestep_spacing": "leading", "steps_offset": 1}, 25),
    ("DDIMScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "linspace"}, 10),
    ("DPMSolverMultistepScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "trailing"}, 10),
    ("DPMSolverMultistepScheduler", {**SD, **ZSNR, "solver_order": 3}, 20),
    ("UniPCMultistepScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "trailing"}, 10),
    ("UniPCMultistepScheduler", {**SD, **ZSNR, "solver_order": 3}, 12),
    ("EulerDiscreteScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "trailing"}, 10),
    ("EulerDiscreteScheduler", {**SD, **ZSNR}, 15),
    ("EulerAncestralDiscreteScheduler", {**SD, **ZSNR, **V, "timestep_spacing": "trailing"}, 10),
    ("DPMSolverMultistepScheduler", {**SD, "use_exponential_sigmas": True}, 15),
    ("DPMSolverMultistepScheduler", {"use_beta_sigmas": True, "solver_order": 3}, 12),
    ("DPMSolverMultistepScheduler", {**SD, "use_lu_lambdas": True}, 20),
    (
        "DPMSolverMultistepScheduler",
        {"use_lu_lambdas": True, "solver_order": 3, "timestep_spacing": "trailing"},
        10,
    ),
    ("DPMSolverMultistepScheduler", {"euler_at_final": True}, 20),
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True, **V, **ZSNR}, 12),
    ("UniPCMultistepScheduler", {**SD, "use_exponential_sigmas": True}, 12),
    ("UniPCMultistepScheduler", {"use_beta_sigmas": True, "solver_order": 3}, 20),
    (
        "UniPCMultistepScheduler",
        {**SD, "use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 10.0},
        10,
    ),
    ("EulerDiscreteScheduler", {**SD, "use_exponential_sigmas": True}, 12),
    (
        "EulerDiscreteScheduler",
        {**SD, "use_beta_sigmas": True, "timestep_spacing": "leading", "steps_offset": 1},
        15,
    ),
    (
        "EulerDiscreteScheduler",
        {**SD, "use_karras_sigmas": True, "sigma_min": 0.1, "sigma_max": 8.0},
        10,
    ),
    ("EulerDiscreteScheduler", {**SD, "use_beta_sigmas": True, "sigma_min": 0.03}, 10),
    ("EulerDiscreteScheduler", {**SD, "interpolation_type": "log_linear"}, 10),
    ("EulerDiscreteScheduler", {"interpolation_type": "log_linear", "use_karras_sigmas": True}, 8),
    ("EulerDiscreteScheduler", {**SD, **V, "timestep_type": "continuous"}, 10),
    ("EulerDiscreteScheduler", {**SD, "final_sigmas_type": "sigma_min"}, 10),
    ("HeunDiscreteScheduler", {**SD, "use_exponential_sigmas": True}, 10),
    ("HeunDiscreteScheduler", {"use_beta_sigmas": True}, 8),
]
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


ADD_NOISE_CASES = [
    ("DDIMScheduler", {}),
    ("DDIMScheduler", {**SD, **ZSNR, **V}),
    ("DPMSolverMultistepScheduler", {**SD}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {**SD, **ZSNR, "timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize("case", ADD_NOISE_CASES, ids=[_case_id((*c, 12)) for c in ADD_NOISE_CASES])
def test_add_noise_parity(case):
    """`add_noise` equals diffusers' `scheduler.add_noise`: at training steps k (DDIM, which
    reads `alphas_cumprod[k]`) and at the grid times of `set_timesteps` (DPM-Solver, which
    reads its own sigma grid)."""
    name, options = case
    config = {"_class_name": name, **options}
    n = 12
    rng = np.random.default_rng(1)
    x0, noise = rng.standard_normal((2, 4, 3, 5))
    scheduler, source, saved = _float64_scheduler(name, config)
    try:
        if name == "DDIMScheduler":
            ks = np.array([0, 1, 250, 998, 999])
            ref = [
                scheduler.add_noise(
                    torch.tensor(x0[:1]), torch.tensor(noise[:1]), torch.tensor([int(k)])
                ).numpy()
                for k in ks
            ]
            sched = js.diffusion.from_diffusers(config, n)[0]
            ts = (ks + 1) / 1000.0
        else:
            scheduler.set_timesteps(n)
            index = np.array([0, 1, n // 2, n - 1])
            ref = [
                scheduler.add_noise(
                    torch.tensor(x0[:1]), torch.tensor(noise[:1]), scheduler.timesteps[[int(i)]]
                ).numpy()
                for i in index
            ]
            sched, _, grid = js.diffusion.from_diffusers(config, n)
            ts = np.asarray(grid)[index]
    finally:
        source.torch, source.np, _ = saved
    # per time: one sample; and all times at once, one per batch entry
    ours = [js.diffusion.add_noise(sched, x0[:1], noise[:1], t) for t in ts]
    batched = js.diffusion.add_noise(
        sched, np.repeat(x0[:1], len(ts), 0), np.repeat(noise[:1], len(ts), 0), ts
    )
    diff = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(ours, ref))
    diff_batched = float(np.max(np.abs(np.asarray(batched) - np.concatenate(ref))))
    print(f"ADD_NOISE {_case_id((*case, n))} {diff:.2e} {diff_batched:.2e}")
    assert diff <= TOL and diff_batched <= TOL, (diff, diff_batched)


TOL_FLOAT32 = 1e-5
CASES_FLOAT32 = [
    ("DDIMScheduler", {**SD, "clip_sample": False, "timestep_spacing": "trailing"}, 10),
    ("DPMSolverMultistepScheduler", {**SD, "solver_order": 2}, 20),
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True, **V}, 15),
    ("UniPCMultistepScheduler", {**SD, "solver_order": 3}, 12),
    ("EulerDiscreteScheduler", {**SD}, 20),
    ("DEISMultistepScheduler", {**SD, "solver_order": 2}, 12),
    ("DPMSolverMultistepScheduler", {**SD, "use_exponential_sigmas": True}, 12),
]


@pytest.mark.parametrize("case", CASES_FLOAT32, ids=[_case_id(c) for c in CASES_FLOAT32])
def test_parity_float32(case):
    """Diffusers in its native float32 against jaxsolve in float32 (x64 stays on: the dtype
    comes from the inputs), on the same exact model."""
    name, options, n = case
    config = {"_class_name": name, **options}
    prediction = config.get("prediction_type", "epsilon")
    noise = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    scheduler = getattr(diffusers, name)(**options)
    scheduler.set_timesteps(n)
    x = torch.tensor(noise) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        if name != "DDIMScheduler":
            index = scheduler.step_index if scheduler.step_index is not None else 0
            s = scheduler.sigmas[index]
            alpha = 1.0 / torch.sqrt(1.0 + s * s)
            sigma = s * alpha
        else:
            abar = scheduler.alphas_cumprod[int(t)]
            alpha, sigma = torch.sqrt(abar), torch.sqrt(1.0 - abar)
        out = _output(_eps(x_in, alpha, sigma), x_in, alpha, sigma, prediction)
        x = scheduler.step(out, t, x).prev_sample
    assert x.dtype == torch.float32
    ref = x.numpy()

    sched, sampler, ts = js.diffusion.from_diffusers(config, n)
    ts = ts.astype(jnp.float32)
    f32 = jnp.float32

    def net(x, k):
        t = ((k + 1.0) / (sched.t_grid.shape[0] - 1)).astype(f32)
        alpha, sigma = sched.alpha(t).astype(f32), sched.sigma(t).astype(f32)
        return _output(_eps(x, alpha, sigma), x, alpha, sigma, prediction).astype(f32)

    model = js.diffusion.from_diffusers_model(net, config)
    euler = name.startswith(("Euler", "Heun"))
    x_T = jnp.asarray(noise) * f32(scheduler.init_noise_sigma)
    if euler:
        x_T = x_T * sched.alpha(ts[0])
    ours = js.diffusion.sample(sampler, model, x_T, ts)
    if euler:
        ours = ours / sched.alpha(ts[-1])
    assert ours.dtype == jnp.float32
    diff = float(np.max(np.abs(np.asarray(ours) - ref)))
    print(f"FLOAT32 {_case_id(case)} {diff:.2e}")
    assert diff <= TOL_FLOAT32, diff
