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
from ._dpm_solver import DPMSolverMultistep, DPMSolverSinglestep
from ._dpm_solver_pp import DPMSolverPP, DPMSolverPPSinglestep
from ._edm import EulerEDM, HeunEDM
from ._model import Model, thresholded
from ._pndm import PNDM
from ._schedules import FlowMatching, VPDiscrete
from ._timesteps import (
    beta_sigmas,
    exponential_sigmas,
    karras_sigmas,
    shifted_flow_sigmas,
    stretched_flow_sigmas,
)
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
    "FlowMatchEulerDiscreteScheduler",
)
_THRESHOLDING = (
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
)
_PREDICTIONS = {
    "epsilon": "eps",
    "v_prediction": "v",
    "sample": "x0",
    "flow_prediction": "velocity",  # (with use_flow_sigmas only)
}
# The diffusers options whose defaults are the only values supported here ("not done" ones).
_DEFAULTS = {
    "clip_sample": False,
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
    "FlowMatchEulerDiscreteScheduler": {"num_train_timesteps": 1000},
}
_FLOW_EULER = "FlowMatchEulerDiscreteScheduler"  # a velocity model, always on flow sigmas


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


# Schedulers that put alphas_cumprod[-1] = 2**-24 in place of the exact 0 of zero-SNR betas
# (so that the first sigma/alpha is finite); DDIM keeps the exact 0.
_ZERO_SNR_FLOORED = (
    "DPMSolverMultistepScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
)
_ZERO_SNR = ("DDIMScheduler",) + _ZERO_SNR_FLOORED


def zero_terminal_snr_betas(betas) -> np.ndarray:
    """Betas rescaled to a zero terminal SNR (Lin et al., "Common Diffusion Noise Schedules and
    Sample Steps are Flawed", WACV 2024, Algorithm 1), in float64 numpy.

    `sqrt(alpha_bar)` is shifted and scaled so that its first value is kept and its last is
    exactly 0: the last beta is then 1 (`VPDiscrete` accepts it; alpha(1) = 0 and
    logsnr(1) = -inf, so the first step needs a v- or x0-predicting model).

    **Arguments:** `betas`, a 1-D array of per-step variances in (0, 1).

    **Returns:** the rescaled betas (float64 numpy).

    **Example:**

    ```python
    betas = js.diffusion.zero_terminal_snr_betas(np.linspace(0.00085, 0.012, 1000))
    assert betas[-1] == 1.0
    sched = js.diffusion.VPDiscrete(betas)
    assert float(sched.alpha(1.0)) == 0.0 and float(sched.logsnr(1.0)) == -np.inf
    ```
    """
    betas = np.asarray(betas, np.float64)
    root = np.sqrt(np.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    abar = root**2
    return 1.0 - np.concatenate([abar[:1], abar[1:] / abar[:-1]])


def diffusers_betas(config: dict[str, Any]) -> np.ndarray:
    """The training betas of a diffusers config, in float64 (numpy).

    With `rescale_betas_zero_snr=True` the betas are rescaled to a zero terminal SNR
    (`zero_terminal_snr_betas`); the schedulers that replace the final `alphas_cumprod` by
    2**-24 (all supported ones but DDIM) get the last beta that gives exactly that value.
    """
    num = int(_get(config, "num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    kind = _get(config, "beta_schedule", "linear")
    start, end = float(_get(config, "beta_start", 1e-4)), float(_get(config, "beta_end", 0.02))
    cls = config.get("_class_name")
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
        raise _unsupported(cls, "beta_schedule", kind)
    if _get(config, "rescale_betas_zero_snr", False):
        if cls not in _ZERO_SNR:
            raise _unsupported(cls, "rescale_betas_zero_snr", True)
        betas = zero_terminal_snr_betas(betas)
        if cls in _ZERO_SNR_FLOORED:
            abar_before = np.exp(np.sum(np.log1p(-betas[:-1])))
            if abar_before <= 2.0**-24:  # the floor would make the noise levels non-monotone
                raise _unsupported(
                    cls, "rescale_betas_zero_snr", "True with alphas_cumprod[-2] <= 2**-24"
                )
            betas[-1] = 1.0 - 2.0**-24 / abar_before
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


# The sigma-grid options each class's constructor accepts (diffusers 0.42); any other class
# given one of them (set to a non-default value) raises.
_SIGMA_GRIDS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
_GRID_OPTIONS = {
    "DPMSolverMultistepScheduler": (*_SIGMA_GRIDS, "use_lu_lambdas", "euler_at_final"),
    "UniPCMultistepScheduler": (*_SIGMA_GRIDS, "sigma_min", "sigma_max"),
    "EulerDiscreteScheduler": (
        *_SIGMA_GRIDS,
        "sigma_min",
        "sigma_max",
        "timestep_type",
        "interpolation_type",
    ),
    "HeunDiscreteScheduler": _SIGMA_GRIDS,
    "DEISMultistepScheduler": _SIGMA_GRIDS,
    "DPMSolverSinglestepScheduler": _SIGMA_GRIDS,
    "FlowMatchEulerDiscreteScheduler": _SIGMA_GRIDS,
}
_GRID_DEFAULTS = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "euler_at_final": False,
    "sigma_min": None,
    "sigma_max": None,
    "timestep_type": "discrete",
    "interpolation_type": "linear",
}


def _check_grid_options(cls, config):
    """Raise for a grid option the class does not have, or a value not supported."""
    accepted = _GRID_OPTIONS.get(cls, ())
    for name, default in _GRID_DEFAULTS.items():
        value = config.get(name, default)
        if value is not None and value != default and name not in accepted:
            raise _unsupported(cls, name, value)
    if sum(bool(_get(config, name, False)) for name in _SIGMA_GRIDS) > 1:
        raise ValueError(
            f"from_diffusers: {cls} takes at most one of {', '.join(_SIGMA_GRIDS)} (as diffusers)"
        )
    for name, allowed in (
        ("timestep_type", ("discrete", "continuous")),
        ("interpolation_type", ("linear", "log_linear")),
    ):
        if _get(config, name, _GRID_DEFAULTS[name]) not in allowed:
            raise _unsupported(cls, name, config[name])


def _sigma_grid_kind(config):
    """The sigma-grid conversion a config asks for ("karras", ..., "lu"), or None."""
    for name in (*_SIGMA_GRIDS, "use_lu_lambdas"):
        if _get(config, name, False):
            return name[4:].split("_")[0]
    return None


def _interpolation(cls, config):
    # Grids built in log sigma (Karras, exponential, beta, Lu, Euler's log-linear) place the
    # network's timestep by diffusers' `_sigma_to_t`, linear in log sigma.
    if _sigma_grid_kind(config) is not None or (
        _get(config, "interpolation_type", "linear") == "log_linear"
    ):
        return "log_sigma"
    if cls in (
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
    ):
        return "sigma"
    return "log_alpha"


def diffusers_schedule(config: dict[str, Any]) -> VPDiscrete | FlowMatching:
    """The `VPDiscrete` schedule of a diffusers config (interpolating as that scheduler does),
    or `FlowMatching()` (alpha = 1 - t, sigma = t) with `use_flow_sigmas`."""
    cls = _cls(config)
    config = _with_defaults(config)
    _check_grid_options(cls, config)
    _check_flow_options(cls, config)
    if _is_flow(config):
        return FlowMatching()
    betas = diffusers_betas(config)
    return VPDiscrete(jnp.asarray(betas), interpolation=_interpolation(cls, config))


def _converted(cls, config, n, sigmas_desc):
    """diffusers' Karras / exponential / beta / Lu conversion of a decreasing sigma array
    (endpoints from it unless the class has `sigma_min`/`sigma_max` overrides), or None."""
    kind = _sigma_grid_kind(config)
    if kind is None:
        return None
    lo, hi = float(sigmas_desc[-1]), float(sigmas_desc[0])
    if "sigma_min" in _GRID_OPTIONS.get(cls, ()) and kind != "lu":
        lo = float(_get(config, "sigma_min", lo))
        hi = float(_get(config, "sigma_max", hi))
    if kind == "karras":
        sigmas = karras_sigmas(lo, hi, n)
    elif kind == "beta":
        sigmas = beta_sigmas(lo, hi, n)
    else:  # exponential, and Lu's lambdas (uniform in log sigma = -logsnr)
        sigmas = exponential_sigmas(lo, hi, n)
    return np.asarray(sigmas, np.float64)


def _multistep_grid(cls, config, n, table_s):
    """The sigmas (incl. the final one) of DPM-Solver/UniPC/DEIS multistep."""
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
    kind = _sigma_grid_kind(config)
    converted = _converted(cls, config, n, table_s[::-1])
    sigmas = table_s[steps] if converted is None else converted
    final = _get(config, "final_sigmas_type", "zero")
    if cls == "DEISMultistepScheduler":  # DEIS always ends at sigma_min
        if kind is not None:  # (and repeats the last converted sigma)
            raise _unsupported(cls, f"use_{kind}_sigmas", True)
        final = "sigma_min"
    elif kind is not None and kind != "karras" and not cls.startswith(("DPMSolverM", "UniPC")):
        raise _unsupported(cls, f"use_{kind}_sigmas", True)
    if final == "zero":
        sigma_last = 0.0
    elif final == "sigma_min":
        # a converted grid ends at sigma_min already: diffusers repeats it (a step of length 0)
        if kind is not None and cls != "DEISMultistepScheduler":
            raise _unsupported(cls, "final_sigmas_type", f"{final} with use_{kind}")
        sigma_last = table_s[0]
    else:
        raise _unsupported(cls, "final_sigmas_type", final)
    return np.concatenate([sigmas, [sigma_last]])


def _euler_grid(cls, config, n, table_s):
    """The sigmas of Euler/Heun/Euler-ancestral; more than n + 1 only with log-linear
    interpolation (whose last ones diffusers never reaches)."""
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
    if _get(config, "interpolation_type", "linear") == "log_linear":
        # n + 1 noise levels from the largest to the smallest training one, uniform in log
        sigmas = np.exp(np.linspace(np.log(table_s[-1]), np.log(table_s[0]), n + 1))
    else:
        sigmas = np.interp(steps, np.arange(num), table_s)
    converted = _converted(cls, config, n, sigmas)
    sigmas = sigmas if converted is None else converted
    final = _get(config, "final_sigmas_type", "zero")
    if final not in ("zero", "sigma_min") or (final != "zero" and cls != "EulerDiscreteScheduler"):
        raise _unsupported(cls, "final_sigmas_type", final)
    return np.concatenate([sigmas, [0.0 if final == "zero" else table_s[0]]])


_FLOW_OPTIONS = ("use_flow_sigmas", "flow_shift", "use_dynamic_shifting", "time_shift_type")
_FLOW_DEFAULTS = {
    "use_flow_sigmas": False,
    "flow_shift": 1.0,
    "use_dynamic_shifting": False,
    "time_shift_type": "exponential",
    "shift_terminal": None,
}


def _is_flow(config):
    return config.get("_class_name") == _FLOW_EULER or bool(_get(config, "use_flow_sigmas", False))


def _prediction(config):
    if config.get("_class_name") == _FLOW_EULER:
        return "flow_prediction"
    return _get(config, "prediction_type", "epsilon")


def _check_flow_options(cls, config):
    """Raise for flow-matching options the class lacks or that are not supported."""
    accepted = {
        "DPMSolverMultistepScheduler": _FLOW_OPTIONS,
        "UniPCMultistepScheduler": (*_FLOW_OPTIONS, "shift_terminal"),
        _FLOW_EULER: ("use_dynamic_shifting", "time_shift_type", "shift_terminal"),
    }.get(cls, ())
    for name, default in _FLOW_DEFAULTS.items():
        value = config.get(name, default)
        if value is not None and value != default and name not in accepted:
            raise _unsupported(cls, name, value)
    flow = _is_flow(config)
    prediction = _prediction(config)
    if prediction == "flow_prediction" and not flow:
        raise _unsupported(cls, "prediction_type", "flow_prediction without use_flow_sigmas")
    if not flow:
        for name in ("use_dynamic_shifting", "shift_terminal"):
            if _get(config, name, _FLOW_DEFAULTS[name]) not in (False, None):
                raise _unsupported(cls, name, f"{config[name]} without use_flow_sigmas")
        return
    # diffusers' v-prediction formula assumes alpha^2 + sigma^2 = 1, untrue on the flow path
    if prediction not in ("flow_prediction", "epsilon", "sample"):
        raise _unsupported(cls, "prediction_type", f"{prediction} with use_flow_sigmas")
    if _sigma_grid_kind(config) is not None and cls != _FLOW_EULER:
        raise _unsupported(cls, f"use_{_sigma_grid_kind(config)}_sigmas", "True with flow sigmas")
    for name in ("invert_sigmas", "stochastic_sampling"):
        if _get(config, name, False):
            raise _unsupported(cls, name, True)
    if _get(config, "algorithm_type", "dpmsolver++") != "dpmsolver++":
        raise _unsupported(cls, "algorithm_type", f"{config['algorithm_type']} with flow sigmas")
    if not _get(config, "predict_x0", True):
        raise _unsupported(cls, "predict_x0", "False with flow sigmas")
    if _get(config, "final_sigmas_type", "zero") != "zero":
        raise _unsupported(cls, "final_sigmas_type", f"{config['final_sigmas_type']} (flow)")
    kind = _get(config, "time_shift_type", "exponential")
    if kind not in ("exponential", "linear"):
        raise _unsupported(cls, "time_shift_type", kind)


def _check_mu(cls, config, mu):
    """`mu` (set_timesteps' dynamic shift) is given exactly when the config needs it."""
    kind = _get(config, "time_shift_type", "exponential")
    dynamic = _is_flow(config) and bool(_get(config, "use_dynamic_shifting", False))
    if mu is not None and not dynamic:
        raise ValueError("from_diffusers: `mu` is only used with use_dynamic_shifting=True")
    if dynamic and cls.startswith(("UniPC", "FlowMatch")) and mu is None:
        raise ValueError("from_diffusers: use_dynamic_shifting=True needs `mu` (as set_timesteps)")
    if mu is not None and cls.startswith("DPMSolver") and kind != "exponential":
        raise _unsupported(cls, "time_shift_type", f"{kind} with `mu`")


def _flow_grid(cls, config, n, mu):
    """The flow-matching sigmas (= times of `FlowMatching()`, incl. the final 0) of
    DPM-Solver/UniPC with `use_flow_sigmas`."""
    num = int(_get(config, "num_train_timesteps", 1000))
    shift = float(_get(config, "flow_shift", 1.0))
    kind = _get(config, "time_shift_type", "exponential")
    if cls == _FLOW_EULER:
        # n levels from its largest to its smallest training level (shifted once already
        # unless dynamic), shifted (again), optionally stretched and converted
        shift = float(_get(config, "shift", 1.0))
        dynamic = _get(config, "use_dynamic_shifting", False)
        lowest = 1.0 / num if dynamic else float(shifted_flow_sigmas(1.0 / num, shift))
        base = np.linspace(1.0 * num, lowest * num, n) / num
        sigmas = shifted_flow_sigmas(base, float(mu), kind) if dynamic else None
        sigmas = shifted_flow_sigmas(base, shift) if sigmas is None else sigmas
        terminal = _get(config, "shift_terminal", None)
        if terminal:
            sigmas = stretched_flow_sigmas(sigmas, float(terminal))
        converted = _converted(cls, config, n, sigmas)
        sigmas = sigmas if converted is None else converted
    elif cls.startswith("DPMSolver"):
        # n levels below 1 - 1/T (the level 0 dropped); `mu` sets the shift to exp(mu)
        base = np.flip(1.0 - np.linspace(1.0, 1.0 / num, n + 1))[:-1]
        if mu is not None:
            shift = math.exp(mu)
        sigmas = shifted_flow_sigmas(base, shift)
    else:  # UniPC: n levels from 1 down
        base = np.linspace(1.0, 1.0 / num, n + 1)[:-1]
        if _get(config, "use_dynamic_shifting", False):
            sigmas = shifted_flow_sigmas(base, float(mu), kind)
        else:
            sigmas = shifted_flow_sigmas(base, shift)
        terminal = _get(config, "shift_terminal", None)
        if terminal:
            sigmas = stretched_flow_sigmas(sigmas, float(terminal))
        if abs(sigmas[0] - 1.0) < 1e-6:  # diffusers keeps the first level off t = 1
            sigmas[0] -= 1e-6
    return np.concatenate([sigmas, [0.0]])


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


def _solver_p(config, solver_p, n, betas, own_ts):
    """The jaxsolve sampler of UniPC's `solver_p` (a scheduler config dict or a live scheduler),
    which must share UniPC's betas, prediction type and grid."""
    cls = "UniPCMultistepScheduler"
    if not isinstance(solver_p, dict):  # a live diffusers scheduler
        solver_p = {"_class_name": type(solver_p).__name__, **dict(solver_p.config)}
    name = solver_p.get("_class_name")
    if name not in SUPPORTED or name.startswith(("Euler", "Heun")):
        raise _unsupported(cls, "solver_p", name)
    inner = {**_CLASS_DEFAULTS[name], **solver_p}
    _, sampler, ts = from_diffusers(inner, n)
    same = (
        _get(inner, "prediction_type", "epsilon") == _get(config, "prediction_type", "epsilon")
        and _threshold(config) is None
        and _threshold(inner) is None
        and np.array_equal(diffusers_betas(inner), betas)
        and ts.shape == own_ts.shape
        and np.allclose(ts, own_ts, rtol=0.0, atol=1e-12)  # (1 ulp apart where inverted)
    )
    if not same or sampler.is_stochastic():  # its steps would not be UniPC's steps
        raise _unsupported(cls, "solver_p", f"{name} (its betas, prediction or grid differ)")
    return sampler


def from_diffusers(
    scheduler_config: dict[str, Any], num_inference_steps: int, *, mu: float | None = None
):
    """A diffusers scheduler config -> `(schedule, sampler, ts)` running the same sampling loop.

    **Arguments:**

    - `scheduler_config`: the dict of a pipeline's `scheduler/scheduler_config.json` (with its
      `_class_name`), or `scheduler.config` of a live diffusers scheduler.
    - `num_inference_steps`: the number of sampler steps, as passed to `set_timesteps`.
    - `mu`: the dynamic time shift passed to `set_timesteps(..., mu=mu)` by flow-matching
      pipelines (needed exactly when the config has `use_flow_sigmas` (or is
      `FlowMatchEulerDiscreteScheduler`) and `use_dynamic_shifting=True`; DPM-Solver then
      uses the shift `exp(mu)`).

    **Returns:** `(schedule, sampler, ts)`: a `VPDiscrete` built from the config's betas (or
    `FlowMatching()`, alpha = 1 - t and sigma = t, for flow sigmas: the shift lies in `ts`), the
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
    `lambda_min_clipped`, `thresholding`), `DPMSolverSinglestepScheduler` (`dpmsolver++`
    and `dpmsolver` (`DPMSolverSinglestep`), 2S/3S on its own grid, both solver types,
    `lower_order_final`), `UniPCMultistepScheduler` (bh1/bh2, orders 1-3, `lower_order_final`
    at any step count, Karras sigmas, `thresholding`, `predict_x0=False`, `disable_corrector`,
    and `solver_p` given as a scheduler config dict or a live scheduler of a supported class
    on the same betas, prediction type and grid as the UniPC), `DEISMultistepScheduler`
    (log-rho, orders 1-3), `PNDMScheduler` (the PRK warm-up of `skip_prk_steps=False` where
    T // n is even and n >= 4, the Heun warm-up of `skip_prk_steps=True`; epsilon and
    v-prediction, the latter converted as diffusers does: `PNDM(convert_output="combined")`),
    `EulerDiscreteScheduler`,
    `HeunDiscreteScheduler` (all spacings, Karras sigmas) and
    `EulerAncestralDiscreteScheduler` (= `DDIM(eta=1)`; the same noise as diffusers only if
    diffusers is fed jaxsolve's draws). Every scheduler: the `linear`, `scaled_linear` and
    `squaredcos_cap_v2` betas or `trained_betas`, and the three prediction types.

    Grid and schedule options: `rescale_betas_zero_snr` (DDIM with the exact alpha = 0 at
    t = 1, which needs a v- or x0-prediction where the grid starts there; DPM-Solver, UniPC,
    Euler and Euler-ancestral with diffusers' `alphas_cumprod[-1] = 2**-24`);
    `use_exponential_sigmas` and `use_beta_sigmas` (DPM-Solver multistep, UniPC, Euler, Heun,
    flow-matching Euler), `use_lu_lambdas` and `euler_at_final` (DPM-Solver multistep; the
    latter where the final step is first order anyway: with `final_sigmas_type="zero"` or
    `lower_order_final` below 15 steps), `sigma_min`/`sigma_max` (UniPC, Euler),
    `interpolation_type="log_linear"` and `timestep_type="continuous"` (Euler; the network
    then gets log(sigma)/4 with v-prediction), `final_sigmas_type="sigma_min"` (Euler);
    flow matching: `use_flow_sigmas` with `flow_shift`, `use_dynamic_shifting` (`mu`,
    `time_shift_type` exponential/linear) and `prediction_type="flow_prediction"` (a
    velocity model) for DPM-Solver++ multistep and UniPC (and UniPC's `shift_terminal`), and
    `FlowMatchEulerDiscreteScheduler` (= `DDIM()` on `FlowMatching()`: `shift`, dynamic
    shifting, `shift_terminal`, Karras/exponential/beta sigmas). Anything else raises a
    `ValueError` naming the class or option.

    Two points differ by design: with Karras sigmas diffusers' multistep schedulers round the
    timestep given to the network (not the sigma used by the update); here the network gets
    the unrounded one (likewise the integer-cast timesteps of the flow grids, and Euler's
    log-linear grid, where diffusers keeps the linear grid's timesteps for the network while
    the update uses the log-linear sigmas; `from_diffusers_model` passes the timestep of
    the sigma used). The model output of `variance_type="learned"` is sliced by
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
    prediction = _prediction(config)
    if prediction not in _PREDICTIONS:
        raise _unsupported(cls, "prediction_type", prediction)
    _check_mu(cls, config, mu)
    variance = config.get("variance_type")
    if variance not in (None, "fixed_small", "learned", "learned_range"):
        raise _unsupported(cls, "variance_type", variance)
    schedule = diffusers_schedule(config)
    betas = diffusers_betas(config)
    with np.errstate(divide="ignore"):  # a zero terminal SNR (DDIM) ends the table with inf
        table_s = np.sqrt(np.expm1(-np.cumsum(np.log1p(-betas))))  # sigma/alpha per step
    num = len(betas)

    if _threshold(config) is not None and cls not in _THRESHOLDING:
        raise _unsupported(cls, "thresholding", True)

    if cls == _FLOW_EULER:  # Euler on the flow x = (1 - s) x0 + s eps is DDIM's step there
        return schedule, DDIM(), jnp.asarray(_flow_grid(cls, config, n, mu))

    if cls == "PNDMScheduler":
        _check_defaults(cls, config)
        skip_prk = bool(_get(config, "skip_prk_steps", False))
        if prediction not in ("epsilon", "v_prediction"):  # (diffusers' PNDM raises too)
            raise _unsupported(cls, "prediction_type", prediction)
        spacing, ratio = config["timestep_spacing"], num // n
        if not skip_prk and (ratio % 2 or n < 4):
            # diffusers' RK half-step is T // n // 2 after t but ends at t - T // n: not a
            # midpoint for odd T // n; and fewer than 4 steps leave no room for its warm-up
            raise _unsupported(cls, "skip_prk_steps", f"False with {n} steps")
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
        # diffusers converts v after combining the raw outputs, at the step's start
        sampler = PNDM(warmup="heun" if skip_prk else "prk", convert_output="combined")
        return schedule, sampler, jnp.asarray(ts)

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
        ts = _ts_of_sigmas(schedule, sigmas)[: n + 1]  # (log-linear: diffusers stops at n)
        if ts[-1] == ts[-2]:  # sigma_min after a grid ending there: a no-op step of length 0
            ts = ts[:-1]
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
        final_zero = _get(config, "final_sigmas_type", "zero") == "zero"
        if (
            _get(config, "euler_at_final", False)
            and order > 1
            and not final_zero  # (a final step to sigma = 0 is first order anyway)
            and not (lower_final and n < 15)
        ):
            raise _unsupported(cls, "euler_at_final", "True with final_sigmas_type='sigma_min'")
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
        _check_defaults(cls, config)
        algorithm = _get(config, "algorithm_type", "dpmsolver++")
        if algorithm not in ("dpmsolver++", "dpmsolver"):
            raise _unsupported(cls, "algorithm_type", algorithm)
        solver_type = _get(config, "solver_type", "midpoint")
        if solver_type not in ("midpoint", "heun"):
            raise _unsupported(cls, "solver_type", solver_type)
        if config["timestep_spacing"] != "linspace":  # singlestep has only this grid
            raise _unsupported(cls, "timestep_spacing", config["timestep_spacing"])
        singlestep = DPMSolverPPSinglestep if algorithm == "dpmsolver++" else DPMSolverSinglestep
        sampler = singlestep(order=order, solver_type=solver_type, lower_order_final=lower_final)
    elif cls == "UniPCMultistepScheduler":
        _check_defaults(cls, config)
        solver_type = _get(config, "solver_type", "bh2")
        if solver_type not in ("bh1", "bh2"):
            raise _unsupported(cls, "solver_type", solver_type)
        predict_x0 = bool(_get(config, "predict_x0", True))
        if _threshold(config) is not None and not predict_x0:  # diffusers: x0 mode only
            raise _unsupported(cls, "thresholding", True)
        solver_p = config.get("solver_p")
        if solver_p is not None:
            own_ts = _ts_of_sigmas(schedule, _multistep_grid(cls, config, n, table_s))
            solver_p = _solver_p(config, solver_p, n, betas, own_ts)
        sampler = UniPC(
            order=order,
            variant=solver_type,
            lower_order_final="always" if lower_final else False,
            predict_x0=predict_x0,
            disable_corrector=tuple(config.get("disable_corrector") or ()),
            solver_p=solver_p,
        )
    else:  # DEISMultistepScheduler
        _check_defaults(cls, config, [("algorithm_type", "deis"), ("solver_type", "logrho")])
        if order not in (1, 2, 3):
            raise _unsupported(cls, "solver_order", order)
        sampler = DEIS(order=order, lower_order_final=lower_final, basis="log_rho")
    if _is_flow(config):  # the flow levels are the times of FlowMatching()
        return schedule, sampler, jnp.asarray(_flow_grid(cls, config, n, mu))
    sigmas = _multistep_grid(cls, config, n, table_s)
    return schedule, sampler, _ts_of_sigmas(schedule, sigmas)


def from_diffusers_model(fn, scheduler_config: dict[str, Any]) -> Model:
    """`Model` of a diffusers network `fn(x, timestep)` for the schedule of `from_diffusers`.

    The network is called with diffusers' (continuous) timestep `k = t T - 1` (with flow
    sigmas `k = t T`, the flow sigma times T; with Euler's `timestep_type="continuous"` and
    v-prediction `k = log(sigma/alpha) / 4`) and its output is read as the config's
    `prediction_type` ("epsilon" -> "eps", "v_prediction" -> "v", "sample" -> "x0",
    "flow_prediction" and `FlowMatchEulerDiscreteScheduler` -> "velocity"). With `variance_type="learned"` or `"learned_range"` the network outputs
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
    prediction = _prediction(scheduler_config)
    if prediction not in _PREDICTIONS:
        raise _unsupported(cls, "prediction_type", prediction)
    schedule = diffusers_schedule(scheduler_config)
    num = int(_get(scheduler_config, "num_train_timesteps", 1000))
    flow = _is_flow(scheduler_config)  # the network takes sigma * T there
    learned = scheduler_config.get("variance_type") in ("learned", "learned_range")

    continuous = (  # EDM's c_noise = log(sigma) / 4 in place of the training step
        cls == "EulerDiscreteScheduler"
        and _get(scheduler_config, "timestep_type", "discrete") == "continuous"
        and prediction == "v_prediction"
    )

    def wrapped(x, t):
        if flow:
            out = fn(x, t * num)
        else:
            out = fn(x, -0.25 * schedule.logsnr(t) if continuous else t * num - 1.0)
        if learned:
            out = out[:, : out.shape[1] // 2]
        return out

    model = Model(wrapped, schedule, _PREDICTIONS[prediction])
    threshold = _threshold(scheduler_config)
    if threshold is not None and cls in _THRESHOLDING[1:]:
        # the multistep schedulers threshold the denoised sample they convert the output to
        model = thresholded(model, *threshold)
    return model
