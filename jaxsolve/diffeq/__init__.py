"""jaxsolve.diffeq: ODE and SDE solvers, step-size control, dense output and `solve`.

Terms say what is integrated (`ODETerm`, `SDETerm` with a Brownian motion from
`jaxsolve.brownian`); solvers how (explicit Runge–Kutta tableaux for ODEs; implicit Euler
and Kværnø's ESDIRK methods for stiff ODEs, their stages solved by `jaxsolve.nonlinear`;
Euler–Maruyama, Milstein and stochastic Runge–Kutta methods that use Lévy areas for SDEs);
controllers with what steps; `solve` runs them in `lax.scan` (constant steps, pre-drawn
Brownian increments) or a bounded, differentiable while loop (adaptive steps).
"""

from ._adjoint import (
    AbstractAdjoint as AbstractAdjoint,
    DirectAdjoint as DirectAdjoint,
    ForwardMode as ForwardMode,
    RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint,
)
from ._controller import (
    AbstractStepSizeController as AbstractStepSizeController,
    ConstantStep as ConstantStep,
    PIDController as PIDController,
)
from ._event import Event as Event
from ._homoode import HomoODE as HomoODE
from ._hosts import CIRTerm as CIRTerm, HOStS as HOStS
from ._implicit import (
    AbstractESDIRK as AbstractESDIRK,
    ESDIRKTableau as ESDIRKTableau,
    ImplicitEuler as ImplicitEuler,
    Kvaerno3 as Kvaerno3,
    Kvaerno4 as Kvaerno4,
    Kvaerno5 as Kvaerno5,
)
from ._langevin import (
    ALIGN as ALIGN,
    QUICSORT as QUICSORT,
    ShOULD as ShOULD,
    UnderdampedLangevinTerm as UnderdampedLangevinTerm,
)
from ._newton import ModifiedNewton as ModifiedNewton
from ._regularise import Regularise as Regularise
from ._rk import (
    RK4 as RK4,
    AbstractExplicitRK as AbstractExplicitRK,
    Bosh3 as Bosh3,
    ButcherTableau as ButcherTableau,
    Dopri5 as Dopri5,
    Euler as Euler,
    Heun as Heun,
    Midpoint as Midpoint,
    Tsit5 as Tsit5,
)
from ._saveat import SaveAt as SaveAt
from ._sde import EulerMaruyama as EulerMaruyama, Milstein as Milstein
from ._solution import Solution as Solution
from ._solve import solve as solve
from ._solver import (
    AbstractSolver as AbstractSolver,
    DenseInfo as DenseInfo,
    StepOutput as StepOutput,
)
from ._srk import (
    SEA as SEA,
    SRA1 as SRA1,
    AbstractSRK as AbstractSRK,
    AdditiveSRKTableau as AdditiveSRKTableau,
    GeneralSRKTableau as GeneralSRKTableau,
    ShARK as ShARK,
    SPaRK as SPaRK,
)
from ._state_step import StateDependentStep as StateDependentStep
from ._term import AbstractTerm as AbstractTerm, ODETerm as ODETerm, SDETerm as SDETerm
