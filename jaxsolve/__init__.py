"""jaxsolve: differentiable numerical solvers in JAX.

Subpackages: `brownian`, `diffeq`, `diffusion`, `linear`, `implicit`, `nonlinear`,
`optimizers`. `RESULTS` holds the result codes shared by every family.
"""

from . import (
    brownian as brownian,
    diffeq as diffeq,
    diffusion as diffusion,
    implicit as implicit,
    linear as linear,
    nonlinear as nonlinear,
    optimizers as optimizers,
)
from ._core import RESULTS as RESULTS

__version__ = "0.1.0"
