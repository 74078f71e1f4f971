"""jaxsolve.nonlinear: root finding, fixed points, minimisation, least squares and Sinkhorn, each
differentiable by implicit differentiation (default) or by checkpointed unrolling.
"""

from ._adjoint import (
    AbstractAdjoint as AbstractAdjoint,
    DirectAdjoint as DirectAdjoint,
    ForwardMode as ForwardMode,
    ImplicitAdjoint as ImplicitAdjoint,
    RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint,
)
from ._base import (
    AbstractConstrainedMinimiser as AbstractConstrainedMinimiser,
    AbstractFixedPointSolver as AbstractFixedPointSolver,
    AbstractLeastSquaresSolver as AbstractLeastSquaresSolver,
    AbstractMinimiser as AbstractMinimiser,
    AbstractNonlinearSolver as AbstractNonlinearSolver,
    AbstractRootFinder as AbstractRootFinder,
)
from ._constrained import FrankWolfe as FrankWolfe, ProjectedGradient as ProjectedGradient
from ._constraints import (
    AbstractConstraint as AbstractConstraint,
    Ball as Ball,
    Box as Box,
    Simplex as Simplex,
)
from ._deq import DEQ as DEQ
from ._descent import (
    AbstractDescent as AbstractDescent,
    BFGSDescent as BFGSDescent,
    LBFGSDescent as LBFGSDescent,
    NonlinearCGDescent as NonlinearCGDescent,
    SteepestDescent as SteepestDescent,
)
from ._fixed import Anderson as Anderson, FixedPointIteration as FixedPointIteration
from ._least_squares import GaussNewton as GaussNewton, LevenbergMarquardt as LevenbergMarquardt
from ._line_search import (
    AbstractLineSearch as AbstractLineSearch,
    BacktrackingArmijo as BacktrackingArmijo,
    LineSearchResult as LineSearchResult,
    StrongWolfe as StrongWolfe,
)
from ._minimisers import (
    BFGS as BFGS,
    LBFGS as LBFGS,
    GradientDescent as GradientDescent,
    NonlinearCG as NonlinearCG,
)
from ._optax import OptaxMinimizer as OptaxMinimizer
from ._root import Bisection as Bisection, Broyden as Broyden, Chord as Chord, Newton as Newton
from ._sinkhorn import (
    Sinkhorn as Sinkhorn,
    SinkhornSolution as SinkhornSolution,
    SinkhornState as SinkhornState,
    sinkhorn as sinkhorn,
)
from ._solution import Solution as Solution
from ._solve import (
    fixed_point as fixed_point,
    least_squares as least_squares,
    minimize as minimize,
    root_find as root_find,
)
