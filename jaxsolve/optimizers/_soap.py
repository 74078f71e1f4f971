"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from .._core import check_positive
from ._matrix import adam_direction, cast, debias, eigenbasis, ema, is_matrix, preconditioned_adam

_HIGHEST = lax.Precision.HIGHEST


class _Side(NamedTuple):
    """One side (rows or columns) of a matrix leaf: the exponential average of `G G^T` (or
    `G^T G`) and its current eigenbasis estimate (columns ordered by decreasing eigenvalue)."""

    statistic: jax.Array
    basis: jax.Array


def _rotate(x, left, right):
    """`Q_L^T x Q_R` (into the eigenbasis)."""
    if left is not None:
        x = jnp.matmul(left.basis.T, x, precision=_HIGHEST)
    if right is not None:
        x = jnp.matmul(x, right.basis, precision=_HIGHEST)
    return x


def _unrotate(x, left, right):
    """`Q_L x Q_R^T` (back to the parameters' coordinates)."""
    if left is not None:
        x = jnp.matmul(left.basis, x, precision=_HIGHEST)
    if right is not None:
        x = jnp.matmul(x, right.basis.T, precision=_HIGHEST)
    return x


def _power_iteration(side: _Side, nu, axis: int) -> tuple[_Side, jax.Array]:
    """One step of power iteration with QR on `side.statistic` from the current basis (SOAP's
    refresh), with the basis' columns first sorted by their Rayleigh quotients and the second
    moment permuted along `axis` to follow them."""
    estimates = jnp.sum(side.basis * jnp.matmul(side.statistic, side.basis, precision=_HIGHEST), 0)
    order = jnp.argsort(-estimates)
    basis = side.basis[:, order]
    nu = jnp.take(nu, order, axis=axis)
    basis, _ = jnp.linalg.qr(jnp.matmul(side.statistic, basis, precision=_HIGHEST))
    return _Side(side.statistic, basis), nu


def _first_basis(statistic, basis):
    return eigenbasis(statistic).astype(basis.dtype)


def _same_basis(statistic, basis):
    return basis


def scale_by_soap(
    b1: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-8,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    *,
    one_sided: bool = False,
    fix_basis: bool = False,
) -> optax.GradientTransformation:
    """SOAP's direction without the learning rate (see `soap`).

    `fix_basis=True` keeps every eigenbasis at the identity (the rotations still run): the
    result is then `optax.scale_by_adam(b1, b2, eps)`, the same floating-point operations (bit
    for bit op by op; compiled, XLA may fuse the two programs differently, to rounding). It
    exists to test that.
    """

    def sides(leaf):
        if not is_matrix(leaf):
            return None

        def side(size):
            if size > max_precond_dim:
                return None
            return _Side(jnp.zeros((size, size), leaf.dtype), jnp.eye(size, dtype=leaf.dtype))

        rows, cols = leaf.shape
        if one_sided:  # only the shorter side is rotated (ties: the rows)
            return (side(rows), None) if rows <= cols else (None, side(cols))
        return (side(rows), side(cols))

    def _update_leaf(grad, mu, nu, sides, count):
        if sides is None:  # biases, scalars, tensors: Adam (as the paper does)
            direction, mu, nu = adam_direction(grad, mu, nu, b1, b2, eps, count)
            return direction, mu, nu, None
        left, right = sides
        first = count == 1
        # The statistics of Shampoo: exponential averages of G G^T and G^T G (decay b2).
        if left is not None:
            gram = jnp.matmul(grad, grad.T, precision=_HIGHEST)
            left = left._replace(statistic=ema(gram, left.statistic, b2))
        if right is not None:
            gram = jnp.matmul(grad.T, grad, precision=_HIGHEST)
            right = right._replace(statistic=ema(gram, right.statistic, b2))
        if not fix_basis:
            # The first step starts from the exact eigenbasis (eigh); later ones refine it.
            left, right = (
                None
                if side is None
                else side._replace(
                    basis=lax.cond(first, _first_basis, _same_basis, side.statistic, side.basis)
                )
                for side in (left, right)
            )
        # Adam in the rotated coordinates; the first moment lives in the original ones.
        mu = ema(grad, mu, b1)
        nu = ema(_rotate(grad, left, right) ** 2, nu, b2)
        direction = debias(_rotate(mu, left, right), b1, count) / (
            jnp.sqrt(debias(nu, b2, count) + 0.0) + cast(eps, grad.dtype)
        )
        direction = _unrotate(direction, left, right)
        if not fix_basis:
            freq = cast(precondition_frequency, count.dtype)
            refresh = jnp.logical_and(jnp.logical_not(first), count % freq == 0)

            def do_refresh(operand):
                left, right, nu = operand
                if left is not None:
                    left, nu = _power_iteration(left, nu, 0)
                if right is not None:
                    right, nu = _power_iteration(right, nu, 1)
                return left, right, nu

            left, right, nu = lax.cond(refresh, do_refresh, lambda op: op, (left, right, nu))
        return direction, mu, nu, (left, right)

    return preconditioned_adam(sides, _update_leaf)


def _soap_chain(
    learning_rate,
    b1,
    b2,
    eps,
    weight_decay,
    precondition_frequency,
    max_precond_dim,
    one_sided=False,
    fix_basis=False,
) -> optax.GradientTransformation:
    return optax.chain(
        scale_by_soap(
            b1,
            b2,
            eps,
            precondition_frequency,
            max_precond_dim,
            one_sided=one_sided,
            fix_basis=fix_basis,
        ),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def soap(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.95,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    *,
    one_sided: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""SOAP: Adam(W) in the eigenbasis of Shampoo's preconditioner.

    For a matrix parameter with gradient $G$, SOAP keeps Shampoo's statistics
    $L \leftarrow b_2 L + (1 - b_2) G G^\top$ and $R \leftarrow b_2 R + (1 - b_2) G^\top G$ and
    their eigenbases $Q_L$, $Q_R$, and runs Adam on the rotated gradient $Q_L^\top G Q_R$ (the
    first moment is kept in the original coordinates and rotated each step, the second moment
    lives in the rotated ones); the Adam direction is rotated back, $Q_L N Q_R^\top$. The
    eigenbases come from `eigh` at the first step and are refreshed every
    `precondition_frequency` steps by one step of power iteration with a QR decomposition
    (columns sorted by their eigenvalue estimates, the second moment permuted with them).
    Unlike the paper's reference code, the first step already updates the parameters: in the
    exact eigenbasis of $G G^\top$ and $G^\top G$ the rotated gradient is diagonal, so that step
    is the polar factor $U V^\top$ of $G$ (a Muon step). While the bases still nearly
    diagonalise each gradient, SOAP's steps have Frobenius norm about $\sqrt{\text{rank}}$ times
    the learning rate, shorter than Adam's $\sqrt{mn}$: it wants a larger learning rate than
    Adam early on (or warm-up).

    Leaves that are not matrices (biases, scalars, higher-rank tensors) get plain Adam(W), and a
    side of a matrix longer than `max_precond_dim` is left unrotated. Weight decay is
    decoupled (AdamW's), multiplied by the learning rate.

    The returned transformation is wrapped in `optax.inject_hyperparams`: the float
    hyperparameters (and `precondition_frequency`) live in the state as arrays
    (`state.hyperparams["learning_rate"]`), so changing them does not recompile.

    **Arguments:**

    - `learning_rate`: a float or an optax schedule.
    - `b1`, `b2`: decay rates of the first and second moments (`b2` also averages `L`, `R`).
    - `eps`: added to the square root of the second moment.
    - `weight_decay`: decoupled weight decay.
    - `precondition_frequency`: steps between refreshes of the eigenbases.
    - `max_precond_dim`: sides longer than this are not rotated.
    - `one_sided`: rotate only the shorter side of each matrix (the paper's one-sided SOAP,
      its Section 6.2: memory and the eigendecomposition of one `min(m, n)` square factor per
      layer, at some cost per step in loss).

    **Returns:** an `optax.GradientTransformationExtraArgs`.

    **Example:**

    ```python
    import optax

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    loss = lambda p: jnp.sum((jnp.arange(3.0) @ p["w"] + p["b"] - 1.0) ** 2)
    tx = js.optimizers.soap(learning_rate=0.1)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < loss({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
    ```

    **Reference:** Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson, Kakade, "SOAP:
    Improving and Stabilizing Shampoo using Adam", arXiv:2409.11321, 2024.
    """
    for name, value in (("eps", eps), ("weight_decay", weight_decay)):
        check_positive(name, value, allow_zero=True)
    _check_frequency_and_dim(precondition_frequency, "max_precond_dim", max_precond_dim)
    return optax.inject_hyperparams(_soap_chain, static_args=("max_precond_dim", "one_sided"))(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        precondition_frequency,
        max_precond_dim,
        one_sided,
    )


def _check_frequency_and_dim(precondition_frequency, dim_name, dim) -> None:
    for name, value in (("precondition_frequency", precondition_frequency), (dim_name, dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
