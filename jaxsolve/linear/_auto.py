"""`Auto()`: pick a solver from the operator's form, size and tags."""

import equinox as eqx
import jax

from .._core import hyperparameter
from ._cg import CG
from ._direct import LU, QR, Cholesky
from ._gmres import GMRES
from ._operator import AbstractLinearOperator, MatrixOperator, is_positive_definite
from ._solver import AbstractDirectLinearSolver, AbstractLinearSolver

_DENSE_LIMIT = 512


class Auto(AbstractDirectLinearSolver):
    """Choose a solver from the operator:

    - non-square: `QR()` (least squares);
    - a dense matrix, or a matrix-free operator of size <= `dense_limit` (materialised by
      one batched application): `Cholesky()` when tagged `"positive_definite"`, else `LU()`;
    - larger matrix-free operators: `CG` when tagged `"positive_definite"`, else `GMRES`,
      with the tolerances below.

    None of these squares the condition number (no normal equations).

    **Arguments:** `rtol`, `atol`, `max_steps` for the iterative choice; `dense_limit`.

    **Example:**

    ```python
    A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    auto = js.linear.Auto()
    print(auto.select(js.linear.MatrixOperator(A)))  # LU
    print(auto.select(js.linear.MatrixOperator(A, tags=("positive_definite",))))  # Cholesky
    print(js.linear.solve(A, jnp.array([1.0, 2.0]), auto).value)
    ```
    """

    rtol: jax.Array = hyperparameter(1e-6)
    atol: jax.Array = hyperparameter(1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)
    dense_limit: int = eqx.field(static=True, default=_DENSE_LIMIT)

    def select(self, operator: AbstractLinearOperator) -> AbstractLinearSolver:
        """The solver `Auto` uses for `operator`."""
        if operator.in_size() != operator.out_size():
            return QR()
        dense = isinstance(operator, MatrixOperator) or operator.in_size() <= self.dense_limit
        positive = is_positive_definite(operator)
        if dense:
            return Cholesky() if positive else LU()
        if positive:
            return CG(self.rtol, self.atol, self.max_steps)
        return GMRES(self.rtol, self.atol, self.max_steps)

    def compute(self, operator, vector):
        return self.select(operator).compute(operator, vector)

    def needs_square(self) -> bool:
        return False
