"""jaxsolve.linear: linear operators and solvers, differentiable as solves.

`solve(A, b, solver)` with `A` a matrix, a function `v -> A v` or an operator; solvers `LU`,
`Cholesky`, `QR`, `CG`, `GMRES`, `BiCGStab`, `SOR`, `SSOR`, `Auto`; and the "Learning to Relax"
tuners `OmegaBandit` and `ContextualOmegaBandit` for SOR's relaxation factor across a
sequence of systems.
"""

from ._auto import Auto as Auto
from ._bicgstab import BiCGStab as BiCGStab
from ._cg import CG as CG
from ._direct import LU as LU, QR as QR, Cholesky as Cholesky
from ._gmres import GMRES as GMRES
from ._operator import (
    AbstractLinearOperator as AbstractLinearOperator,
    DiagonalOperator as DiagonalOperator,
    FunctionOperator as FunctionOperator,
    MatrixOperator as MatrixOperator,
)
from ._relax import (
    BanditState as BanditState,
    ContextualOmegaBandit as ContextualOmegaBandit,
    OmegaBandit as OmegaBandit,
)
from ._solve import solve as solve
from ._solver import (
    AbstractDirectLinearSolver as AbstractDirectLinearSolver,
    AbstractIterativeLinearSolver as AbstractIterativeLinearSolver,
    AbstractLinearSolver as AbstractLinearSolver,
    DirectState as DirectState,
    Solution as Solution,
)
from ._sor import SOR as SOR, SSOR as SSOR
