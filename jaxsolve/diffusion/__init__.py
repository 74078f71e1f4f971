"""jaxsolve.diffusion: noise schedules, model parameterisations, timestep grids and samplers.

Sampling a diffusion model is solving its probability-flow ODE (or reverse SDE) from noise at
`ts[0]` to data at `ts[-1]`. `sample(sampler, model, x_T, ts)` runs any sampler in `lax.scan`;
every sampler is a pure `init`/`step` equinox module (`AbstractSampler`).
`sample_solution` is the same call returning a `Solution` (value, result, stats, state).
"""

from ._add_noise import add_noise as add_noise
from ._bdia import BDIA as BDIA
from ._boss import boss_timesteps as boss_timesteps
from ._dc_solver import DCSolver as DCSolver, fit_dc_ratios as fit_dc_ratios
from ._ddim import DDIM as DDIM
from ._deis import DEIS as DEIS
from ._dpm_solver import (
    DPMSolver as DPMSolver,
    DPMSolverMultistep as DPMSolverMultistep,
    DPMSolverSinglestep as DPMSolverSinglestep,
)
from ._dpm_solver_pp import (
    DPMSolverPP as DPMSolverPP,
    DPMSolverPPSinglestep as DPMSolverPPSinglestep,
)
from ._dpm_solver_v3 import (
    DPMSolverV3 as DPMSolverV3,
    DPMSolverV3Statistics as DPMSolverV3Statistics,
    dpm_solver_v3_statistics as dpm_solver_v3_statistics,
)
from ._edm import EulerEDM as EulerEDM, HeunEDM as HeunEDM
from ._from_diffusers import (
    from_diffusers as from_diffusers,
    from_diffusers_model as from_diffusers_model,
    zero_terminal_snr_betas as zero_terminal_snr_betas,
)
from ._invert import invert as invert
from ._model import Guidance as Guidance, Model as Model
from ._momentum import GHVB as GHVB, HeavyBall as HeavyBall
from ._pndm import PNDM as PNDM
from ._rectified_flow import (
    flow_matching_loss as flow_matching_loss,
    reflow as reflow,
    straightness as straightness,
)
from ._sample import sample as sample, sample_solution as sample_solution
from ._sampler import AbstractSampler as AbstractSampler
from ._schedules import (
    VE as VE,
    AbstractSchedule as AbstractSchedule,
    FlowMatching as FlowMatching,
    VPCosine as VPCosine,
    VPDiscrete as VPDiscrete,
    VPLinear as VPLinear,
)
from ._sde_dpm_solver_pp import SDEDPMSolverPP as SDEDPMSolverPP
from ._search import LearnedTimesteps as LearnedTimesteps, learn_timesteps as learn_timesteps
from ._solution import Solution as Solution
from ._timesteps import (
    beta_ppf as beta_ppf,
    beta_sigmas as beta_sigmas,
    exponential_sigmas as exponential_sigmas,
    karras_sigmas as karras_sigmas,
    shifted_flow_sigmas as shifted_flow_sigmas,
    stretched_flow_sigmas as stretched_flow_sigmas,
    timesteps as timesteps,
)
from ._unipc import UniPC as UniPC
