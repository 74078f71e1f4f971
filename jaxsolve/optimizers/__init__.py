"""Optimisers that plug into optax, gradient estimators and consensus-based optimisation.

Every optimiser here is an `optax.GradientTransformation` (composes with `optax.chain`); the
gradient estimators and `cbo_minimize` follow the solver contract of `jaxsolve._core`
(hyperparameters as array fields, an `AbstractSolution` returned by entry points).
"""

from ._bilevel import (
    BilevelSolution as BilevelSolution,
    BilevelState as BilevelState,
    PenaltyBilevel as PenaltyBilevel,
    penalty_bilevel as penalty_bilevel,
    penalty_hypergradient as penalty_hypergradient,
)
from ._cbo import (
    CBO as CBO,
    CBOSolution as CBOSolution,
    CBOState as CBOState,
    cbo_minimize as cbo_minimize,
)
from ._estimators import (
    AbstractGradientEstimator as AbstractGradientEstimator,
    Coordinate as Coordinate,
    ForwardGradient as ForwardGradient,
    TwoPoint as TwoPoint,
    estimate_gradient as estimate_gradient,
)
from ._newton_schulz import newton_schulz as newton_schulz, turbo_muon as turbo_muon
from ._polyak import (
    PolyakMomentumState as PolyakMomentumState,
    polyak_momentum as polyak_momentum,
)
from ._sania import SaniaState as SaniaState, sania as sania
from ._shampoo import shampoo as shampoo
from ._soap import soap as soap
