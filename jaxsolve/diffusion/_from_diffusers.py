"""Porting a Hugging Face diffusers scheduler: its config -> (schedule, sampler, ts).

Diffusers' discrete training step k (0..T-1) sits at t = (k + 1) / T of `VPDiscrete`, so
that a network trained on integer steps is called with `k = t T - 1`
(`from_diffusers_model` wraps it). The grids, the final step and each scheduler's update rule
are reproduced in float64 to rounding; options this module cannot express raise a
`ValueError` naming the option.
"""

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from ._ddim import DDIM
from ._deis import DEIS
from ._dpm_solver import DPMSolverMultistep
from ._dpm_solver_pp import DPMSolverPP, DPMSolverPPSinglestep
from ._edm import EulerEDM, HeunEDM
from ._model import Model, thresholded
from ._pndm import PNDM
from ._schedules import VPDiscrete
from ._unipc import UniPC

SUPPORTED = (
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "DEISMultistepScheduler",
    "PNDMScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverSinglestepScheduler",
)
_THRESHOLDING = (
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
)
_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
# The diffusers options whose defaults are the only values supported here ("not done" ones).
_DEFAULTS = {
    "clip_sample": False,
    "use_lu_lambdas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
    "euler_at_final": False,
    "disable_corrector": [],
    "solver_p": None,
    "timestep_type": "discrete",
    "interpolation_type": "linear",
    "sigma_min": None,
    "sigma_max": None,
}
_DDPM = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
_LINSPACE = {"timestep_spacing": "linspace", "steps_offset": 0}
# diffusers' own defaults, per class (diffusers 0.42), for the keys a config may leave out
_CLASS_DEFAULTS = {
    "DDIMScheduler": {**_DDPM, "timestep_spacing": "leading", "steps_offset": 0},
    "DPMSolverMultistepScheduler": {**_DDPM, **_LINSPACE},
    "UniPCMultistepScheduler": {**_DDPM, **_LINSPACE},
    "DEISMultistepScheduler": {**_DDPM, **_LINSPACE},
    "EulerDiscreteScheduler": {**_DDPM, **_LINSPACE},
    "HeunDiscreteScheduler": {**_DDPM, **_LINSPACE, "beta_start": 0.00085, "beta_end": 0.012},
    "PNDMScheduler": {**_DDPM, "timestep_spacing": "leading", "steps_offset": 0},
    "EulerAncestralDiscreteScheduler": {**_DDPM, **_LINSPACE},
    "DPMSolverSinglestepScheduler": {**_DDPM, **_LINSPACE, "lower_order_final": False},
}


def _get(config, name, default):
    value = config.get(name, default)
    return default if value is None and default is not None else value


def _unsupported(cls, name, value):
    return ValueError(
        f"from_diffusers: {cls} option {name}={value!r} is not supported by jaxsolve yet"
    )


def _check_defaults(cls, config, extra=()):
    for name, default in list(_DEFAULTS.items()) + list(extra):
        value = config.get(name, default)
        if value is None and default is None:
            continue
        if value != default and not (
            isinstance(value, list) and len(value) == 0 == len(default or [])
        ):
            raise _unsupported(cls, name, value)


def diffusers_betas(config: dict[str, Any], allow_zero_snr: bool = False) -> np.ndarray:
    """The training betas of a diffusers config, in float64 (numpy)."""
    num = int(_get(config, "num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    kind = _get(config, "beta_schedule", "linear")
    start, end = float(_get(config, "beta_start", 1e-4)), float(_get(config, "beta_end", 0.02))
    if trained is not None:
        betas = np.asarray(trained, np.float64)
    elif kind == "linear":
        betas = np.linspace(start, end, num, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, num, dtype=np.float64) ** 2
    elif kind == "squaredcos_cap_v2":
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f((i + 1) / num) / f(i / num), 0.999) for i in range(num)])
    else:
        raise _unsupported(config.get("_class_name"), "beta_schedule", kind)
    if _get(config, "rescale_betas_zero_snr", False) and not allow_zero_snr:
        raise _unsupported(config.get("_class_name"), "rescale_betas_zero_snr", True)
    if _get(config, "rescale_betas_zero_snr", False):
        # Lin et al. 2024: shift and scale sqrt(alpha_bar) so that it ends at exactly 0.
        root = np.sqrt(np.cumprod(1.0 - betas))
        first, last = root[0], root[-1]
        root = (root - last) * first / (first - last)
        abar = root**2
        betas = 1.0 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return betas


def _threshold(config):
    """(ratio, max value) of dynamic thresholding, or None."""
    if not _get(config, "thresholding", False):
        return None
    return (
        float(_get(config, "dynamic_thresholding_ratio", 0.995)),
        float(_get(config, "sample_max_value", 1.0)),
    )


def _with_defaults(config):
    return {**_CLASS_DEFAULTS[_cls(config)], **config}


def _cls(config):
    cls = config.get("_class_name")
    if cls not in SUPPORTED:
        raise ValueError(
            f"from_diffusers: scheduler class {cls!r} is not supported; supported: "
            f"{', '.join(SUPPORTED)}"
        )
    return cls


def _interpolation(cls, config):
    if cls in (
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
    ):
        return "log_sigma" if _get(config, "use_karras_sigmas", False) else "sigma"
    return "log_sigma" if _get(config, "use_karras_sigmas", False) else "log_alpha"


def diffusers_schedule(config: dict[str, Any]) -> VPDiscrete:
    """The `VPDiscrete` schedule of a diffusers config (interpolating as that scheduler does)."""
    cls = _cls(config)
    config = _with_defaults(config)
    betas = diffusers_betas(config)
    if cls.startswith(("Euler", "Heun")) and _get(config, "rescale_betas_zero_snr", False):
        raise _unsupported(cls, "rescale_betas_zero_snr", True)
    return VPDiscrete(jnp.asarray(betas), interpolation=_interpolation(cls, config))


def _karras(sigmas_desc, n, rho=7.0):
    lo, hi = sigmas_desc[-1] ** (1 / rho), sigmas_desc[0] ** (1 / rho)
    return (hi + np.linspace(0, 1, n) * (lo - hi)) ** rho


def _multistep_grid(cls, config, n, table_s):
    """(timesteps, sigmas incl. the final one) of DPM-Solver/UniPC/DEIS multistep."""
    num = len(table_s)
    spacing = _get(config, "timestep_spacing", "linspace")
    last = num
    clip = _get(config, "lambda_min_clipped", -float("inf"))
    if cls.startswith("DPMSolver") and clip != -float("inf"):
        lam = -np.log(table_s)
        last = num - int(np.searchsorted(lam[::-1], clip, side="left"))
    elif clip not in (-float("inf"), None):
        raise _unsupported(cls, "lambda_min_clipped", clip)
    if spacing == "linspace":
        steps = np.linspace(0, last - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        ratio = last // (n + 1)
        steps = (np.arange(0, n + 1) * ratio).round()[::-1][:-1].astype(np.int64)
        steps = steps + int(_get(config, "steps_offset", 0))
    elif spacing == "trailing":
        steps = np.arange(last, 0, -num / n).round().astype(np.int64) - 1
    else:
        raise _unsupported(cls, "timestep_spacing", spacing)
    if _get(config, "use_karras_sigmas", False):
        sigmas = _karras(table_s[::-1], n)
    else:
        sigmas = table_s[steps]
    final = _get(config, "final_sigmas_type", "zero")
    if cls == "DEISMultistepScheduler":  # DEIS always ends at sigma_min
        if _get(config, "use_karras_sigmas", False):  # (and repeats the last Karras sigma)
            raise _unsupported(cls, "use_karras_sigmas", True)
        final = "sigma_min"
    if final == "zero":
        sigma_last = 0.0
    elif final == "sigma_min":
        sigma_last = table_s[0]
    else:
        raise _unsupported(cls, "final_sigmas_type", final)
    return np.concatenate([sigmas, [sigma_last]])


def _euler_grid(cls, config, n, table_s):
    num = len(table_s)
    spacing = _get(config, "timestep_spacing", "linspace")
    if spacing == "linspace":
        steps = np.linspace(0, num - 1, n)[::-1]
    elif spacing == "leading":
        steps = (np.arange(0, n) * (num // n)).round()[::-1] + int(_get(config, "steps_offset", 0))
    elif spacing == "trailing":
        steps = np.arange(num, 0, -num / n).round() - 1
    else:
        raise _unsupported(cls, "timestep_spacing", spacing)
    sigmas = np.interp(steps, np.arange(num), table_s)
    if _get(config, "use_karras_sigmas", False):
        sigmas = _karras(sigmas, n)
    final = _get(config, "final_sigmas_type", "zero")
    if final not in ("zero", "sigma_min"):
        raise _unsupported(cls, "final_sigmas_type", final)
    return np.concatenate([sigmas, [0.0 if final == "zero" else table_s[0]]])


def _ts_of_sigmas(schedule, sigmas):
    """Times whose sigma/alpha are `sigmas` (t = 0 for sigma = 0)."""
    sigmas = jnp.asarray(sigmas)
    positive = sigmas > 0
    ts = schedule.t_of_logsnr(-jnp.log(jnp.where(positive, sigmas, 1.0)))
    ts = jnp.where(positive, ts, 0.0)
    # grid points on training steps are placed exactly there (the inverse may be 1 ulp off)
    num = schedule.t_grid.shape[0] - 1
    snapped = jnp.round(ts * num) / num
    return jnp.where(jnp.abs(ts - snapped) < 1e-9, snapped, ts)


def from_diffusers(scheduler_config: dict[str, Any], num_inference_steps: int):
    """A diffusers scheduler config -> `(schedule, sampler, ts)` running the same sampling loop.

    **Arguments:**

    - `scheduler_config`: the dict of a pipeline's `scheduler/scheduler_config.json` (with its
      `_class_name`), or `scheduler.config` of a live diffusers scheduler.
    - `num_inference_steps`: the number of sampler steps, as passed to `set_timesteps`.

    **Returns:** `(schedule, sampler, ts)`: a `VPDiscrete` built from the config's betas, the
    sampler with diffusers' update rule, and the grid (`ts[-1]` is the final time: 0 for a
    final step to clean data). With `model = from_diffusers_model(fn, scheduler_config)` (the
    config's `prediction_type`, the network called with diffusers' timestep),
    `sample(sampler, model, x_T, ts)` reproduces diffusers' loop to about 1e-14 in float64
    (x_T = diffusers' initial latents; for the Euler/Heun schedulers, whose latents live in
    x / alpha, `x_T = latents * schedule.alpha(ts[0])` and the result is `x / alpha(ts[-1])`)
    (tests/diffusion/test_diffusers_parity.py).

    Supported (diffusers 0.42): `DDIMScheduler` (all spacings, `steps_offset`,
    `set_alpha_to_one`, `clip_sample` (on by default there), `thresholding`; `eta` is a `step`
    argument in diffusers: use `DDIM(eta=..., stride=sampler.stride, ...)`),
    `DPMSolverMultistepScheduler` (`dpmsolver++` and `dpmsolver`, `midpoint` and `heun`,
    orders 1-3 with the reference 3M coefficient, Karras sigmas, both `final_sigmas_type`,
    `lambda_min_clipped`, `thresholding`), `DPMSolverSinglestepScheduler` (`dpmsolver++`,
    2S/3S on its own grid, both solver types, `lower_order_final`),
    `UniPCMultistepScheduler` (bh1/bh2, orders 1-3, `lower_order_final` at any step count,
    Karras sigmas, `thresholding`), `DEISMultistepScheduler` (log-rho, orders 1-3),
    `PNDMScheduler` (`skip_prk_steps=True`, epsilon prediction), `EulerDiscreteScheduler`,
    `HeunDiscreteScheduler` (all spacings, Karras sigmas) and
    `EulerAncestralDiscreteScheduler` (= `DDIM(eta=1)`; the same noise as diffusers only if
    diffusers is fed jaxsolve's draws). Every scheduler: the `linear`, `scaled_linear` and
    `squaredcos_cap_v2` betas or `trained_betas`, and the three prediction types.
    Anything else raises a `ValueError` naming the class or option.

    Two points differ by design: with Karras sigmas diffusers' multistep schedulers round the
    timestep given to the network (not the sigma used by the update); here the network gets
    the unrounded one. The model output of `variance_type="learned"` is sliced by
    `from_diffusers_model`.

    **Example:**

    ```python
    config = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
              "beta_start": 0.00085, "beta_end": 0.012, "solver_order": 2}
    sched, sampler, ts = js.diffusion.from_diffusers(config, 20)
    assert isinstance(sampler, js.diffusion.DPMSolverPP) and ts.shape == (21,)
    assert float(ts[0]) == 1.0 and float(ts[-1]) == 0.0  # diffusers' t = 999 ... final zero
    # a network of (x, diffusers timestep): the exact eps when all data sit at 0.5
    def eps_net(x, k):
        t = (k + 1) / 1000
        return (x - sched.alpha(t) * 0.5) / sched.sigma(t)
    model = js.diffusion.from_diffusers_model(eps_net, config)
    x0 = js.diffusion.sample(sampler, model, jnp.ones(3), ts)
    assert jnp.allclose(x0, 0.5, atol=1e-6)
    ```
    """
    cls = _cls(scheduler_config)
    config = {**_CLASS_DEFAULTS[cls], **scheduler_config}
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise ValueError(
            f"`num_inference_steps` must be a positive int, got {num_inference_steps!r}"
        )
    n = int(num_inference_steps)
    if n < 1:
        raise ValueError(f"`num_inference_steps` must be a positive int, got {n}")
    prediction = _get(config, "prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        raise _unsupported(cls, "prediction_type", prediction)
    variance = config.get("variance_type")
    if variance not in (None, "fixed_small", "learned", "learned_range"):
        raise _unsupported(cls, "variance_type", variance)
    schedule = diffusers_schedule(config)
    betas = diffusers_betas(config)
    table_s = np.sqrt(np.expm1(-np.cumsum(np.log1p(-betas))))  # sigma/alpha per training step
    num = len(betas)

    if _threshold(config) is not None and cls not in _THRESHOLDING:
        raise _unsupported(cls, "thresholding", True)

    if cls == "PNDMScheduler":
        _check_defaults(cls, config)
        if not _get(config, "skip_prk_steps", False):
            raise _unsupported(cls, "skip_prk_steps", False)
        if prediction != "epsilon":  # diffusers converts v at its Heun warm-up step with the
            # alpha of t + T // n and the sample there, not where v was evaluated
            raise _unsupported(cls, "prediction_type", prediction)
        spacing, ratio = config["timestep_spacing"], num // n
        if spacing == "leading":
            steps = np.arange(0, n)[::-1] * ratio + int(config["steps_offset"])
        elif spacing == "trailing":
            steps = np.round(np.arange(num, 0, -num / n)).astype(np.int64) - 1
        else:
            raise _unsupported(cls, "timestep_spacing", spacing)
        if not np.array_equal(steps[:-1] - ratio, steps[1:]):
            raise _unsupported(cls, "timestep_spacing", spacing)  # off-grid steps
        final = steps[-1] - ratio
        if final < 0:
            final = -1 if _get(config, "set_alpha_to_one", False) else 0
        ts = np.concatenate([(steps + 1) / num, [(final + 1) / num]])
        if ts[-1] == ts[-2]:  # a last step of length 0 (set_alpha_to_one=False): a no-op
            ts = ts[:-1]
        return schedule, PNDM(warmup="heun"), jnp.asarray(ts)

    if cls == "DDIMScheduler":
        clip = _get(config, "clip_sample", True)  # diffusers' DDIM default
        clip_range = float(_get(config, "clip_sample_range", 1.0)) if clip else None
        threshold = _threshold(config)
        if threshold is not None:
            clip_range = None  # diffusers: thresholding replaces clipping
        _check_defaults(cls, {**config, "clip_sample": False})
        spacing = config["timestep_spacing"]
        ratio = num // n
        if spacing == "linspace":
            steps = np.linspace(0, num - 1, n).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            steps = (np.arange(0, n) * ratio).round()[::-1].astype(np.int64)
            steps = steps + int(config["steps_offset"])
        elif spacing == "trailing":
            steps = np.round(np.arange(num, 0, -num / n)).astype(np.int64) - 1
        else:
            raise _unsupported(cls, "timestep_spacing", spacing)
        targets = steps - ratio
        final = -1 if _get(config, "set_alpha_to_one", True) else 0
        targets = np.where(targets < 0, final, targets)
        ts = np.concatenate([(steps + 1) / num, [(targets[-1] + 1) / num]])
        if ts[-1] == ts[-2]:  # set_alpha_to_one=False ends with a step of length 0: a no-op
            if clip_range is not None:  # ... except that it clips the sample
                raise _unsupported(cls, "set_alpha_to_one", False)
            ts = ts[:-1]
            targets = targets[:-1]
            steps = steps[:-1]
        regular = np.array_equal(targets[:-1], steps[1:])
        sampler = DDIM(
            stride=None if regular else ratio / num,
            clip_sample=clip_range,
            threshold_ratio=None if threshold is None else threshold[0],
            sample_max_value=1.0 if threshold is None else threshold[1],
        )
        return schedule, sampler, jnp.asarray(ts)

    if cls in ("EulerDiscreteScheduler", "HeunDiscreteScheduler"):
        _check_defaults(cls, config)
        sigmas = _euler_grid(cls, config, n, table_s)
        ts = _ts_of_sigmas(schedule, sigmas)
        return schedule, (EulerEDM() if cls == "EulerDiscreteScheduler" else HeunEDM()), ts

    if cls == "EulerAncestralDiscreteScheduler":
        # Euler-ancestral is DDPM's ancestral step: DDIM with eta = 1 (sigma_up is DDIM's noise
        # scale divided by alpha, sigma_down its kept noise).
        _check_defaults(cls, config)
        sigmas = _euler_grid(cls, config, n, table_s)
        return schedule, DDIM(eta=1.0), _ts_of_sigmas(schedule, sigmas)

    order = int(_get(config, "solver_order", 2))
    lower_final = bool(_get(config, "lower_order_final", True))
    if cls == "DPMSolverMultistepScheduler":
        _check_defaults(cls, config)
        algorithm = _get(config, "algorithm_type", "dpmsolver++")
        solver_type = _get(config, "solver_type", "midpoint")
        if solver_type not in ("midpoint", "heun"):
            raise _unsupported(cls, "solver_type", solver_type)
        options = dict(
            order=order,
            lower_order_final=lower_final,
            third_order="reference",
            solver_type=solver_type,
        )
        if algorithm == "dpmsolver++":
            sampler = DPMSolverPP(**options)
        elif algorithm == "dpmsolver":
            sampler = DPMSolverMultistep(**options)
        else:
            raise _unsupported(cls, "algorithm_type", algorithm)
    elif cls == "DPMSolverSinglestepScheduler":
        _check_defaults(cls, config, [("algorithm_type", "dpmsolver++")])
        solver_type = _get(config, "solver_type", "midpoint")
        if solver_type not in ("midpoint", "heun"):
            raise _unsupported(cls, "solver_type", solver_type)
        if config["timestep_spacing"] != "linspace":  # singlestep has only this grid
            raise _unsupported(cls, "timestep_spacing", config["timestep_spacing"])
        sampler = DPMSolverPPSinglestep(
            order=order, solver_type=solver_type, lower_order_final=lower_final
        )
    elif cls == "UniPCMultistepScheduler":
        _check_defaults(cls, config, [("predict_x0", True)])
        solver_type = _get(config, "solver_type", "bh2")
        if solver_type not in ("bh1", "bh2"):
            raise _unsupported(cls, "solver_type", solver_type)
        sampler = UniPC(
            order=order, variant=solver_type, lower_order_final="always" if lower_final else False
        )
    else:  # DEISMultistepScheduler
        _check_defaults(cls, config, [("algorithm_type", "deis"), ("solver_type", "logrho")])
        if order not in (1, 2, 3):
            raise _unsupported(cls, "solver_order", order)
        sampler = DEIS(order=order, lower_order_final=lower_final, basis="log_rho")
    sigmas = _multistep_grid(cls, config, n, table_s)
    return schedule, sampler, _ts_of_sigmas(schedule, sigmas)


def from_diffusers_model(fn, scheduler_config: dict[str, Any]) -> Model:
    """`Model` of a diffusers network `fn(x, timestep)` for the schedule of `from_diffusers`.

    The network is called with diffusers' (continuous) timestep `k = t T - 1` and its output is
    read as the config's `prediction_type` ("epsilon" -> "eps", "v_prediction" -> "v",
    "sample" -> "x0"). With `variance_type="learned"` or `"learned_range"` the network outputs
    twice the channels (axis 1, NCHW) and the first half is the prediction. With
    `thresholding=True` the multistep schedulers' dynamic thresholding of the denoised sample
    is applied here (the model then predicts x0); `DDIMScheduler` thresholds in its sampler.

    **Example:**

    ```python
    config = {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
    model = js.diffusion.from_diffusers_model(lambda x, k: 0.0 * x, config)
    assert model.prediction == "v"
    ```
    """
    cls = _cls(scheduler_config)
    scheduler_config = _with_defaults(scheduler_config)
    prediction = _get(scheduler_config, "prediction_type", "epsilon")
    if prediction not in _PREDICTIONS:
        raise _unsupported(cls, "prediction_type", prediction)
    schedule = diffusers_schedule(scheduler_config)
    num = schedule.t_grid.shape[0] - 1
    learned = scheduler_config.get("variance_type") in ("learned", "learned_range")

    def wrapped(x, t):
        out = fn(x, t * num - 1.0)
        if learned:
            out = out[:, : out.shape[1] // 2]
        return out

    model = Model(wrapped, schedule, _PREDICTIONS[prediction])
    threshold = _threshold(scheduler_config)
    if threshold is not None and cls in _THRESHOLDING[1:]:
        # the multistep schedulers threshold the denoised sample they convert the output to
        model = thresholded(model, *threshold)
    return model
