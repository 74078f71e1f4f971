"""jaxsolve.implicit: differentiate the solution of `F(x, θ) = 0` by the implicit function
theorem, in forward and reverse mode, without unrolling the solver.

`custom_root(optimality_fn)` and `custom_fixed_point(fixed_point_fn)` are decorators;
`implicit_root` is the same as a function call (for wrapping a solver loop directly).
"""

from ._root import (
    custom_fixed_point as custom_fixed_point,
    custom_root as custom_root,
    default_solver as default_solver,
    implicit_root as implicit_root,
)
