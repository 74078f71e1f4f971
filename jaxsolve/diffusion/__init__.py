"""jaxsolve.diffusion: noise schedules, model parameterisations, timestep grids and samplers.

Sampling a diffusion model is solving its probability-flow ODE (or reverse SDE) from noise at
`ts[0]` to data at `ts[-1]`. `sample(sampler, model, x_T, ts)` runs any sampler in `lax.scan`;
every sampler is a pure `init`/`step` equinox module (`AbstractSampler`).
"""

from ._ddim import DDIM as DDIM
from ._model import Guidance as Guidance, Model as Model
from ._sample import sample as sample
from ._sampler import AbstractSampler as AbstractSampler
from ._schedules import (
    VE as VE,
    AbstractSchedule as AbstractSchedule,
    FlowMatching as FlowMatching,
    VPCosine as VPCosine,
    VPDiscrete as VPDiscrete,
    VPLinear as VPLinear,
)
from ._timesteps import timesteps as timesteps
