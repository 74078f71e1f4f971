"""Shampoo with blocking and grafting (Gupta, Koren and Singer, 2018; Anil et al., 2020)."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from .._core import check_option, check_positive
from ._matrix import (
    block_bounds,
    cast,
    debias,
    ema,
    is_matrix,
    preconditioned_adam,
    symmetric_inverse_root,
)

_HIGHEST = lax.Precision.HIGHEST
_GRAFTINGS = ("adam", "sgd", "none")
_ADAM_EPS = 1e-8


class _Block(NamedTuple):
    """One block of a matrix leaf: the averages of `G G^T` and `G^T G` and their inverse
    fourth roots (the preconditioner, recomputed every `precondition_frequency` steps)."""

    left: jax.Array
    right: jax.Array
    left_root: jax.Array
    right_root: jax.Array


def _grid(shape, block_size):
    return [
        (rows, cols)
        for rows in block_bounds(shape[0], block_size)
        for cols in block_bounds(shape[1], block_size)
    ]


def scale_by_shampoo(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-12,
    precondition_frequency: int = 10,
    block_size: int = 1024,
    grafting: str = "adam",
) -> optax.GradientTransformation:
    """Shampoo's direction without the learning rate (see `shampoo`)."""

    def blocks(leaf):
        if not is_matrix(leaf):
            return None
        out = []
        for (r0, r1), (c0, c1) in _grid(leaf.shape, block_size):
            rows, cols = r1 - r0, c1 - c0
            zeros = lambda k: jnp.zeros((k, k), leaf.dtype)  # noqa: E731
            eye = lambda k: jnp.eye(k, dtype=leaf.dtype)  # noqa: E731
            out.append(_Block(zeros(rows), zeros(cols), eye(rows), eye(cols)))
        return tuple(out)

    def _update_leaf(grad, mu, nu, blocks, count):
        mu = ema(grad, mu, b1)
        mu_hat = debias(mu, b1, count)
        if grafting == "sgd":
            graft = mu_hat
        else:
            nu = ema(grad**2, nu, b2)
            graft = mu_hat / (jnp.sqrt(debias(nu, b2, count)) + _ADAM_EPS)
        if blocks is None:  # biases, scalars, tensors: the grafting method itself
            return graft, mu, nu, None
        freq = cast(precondition_frequency, count.dtype)
        refresh = jnp.logical_or(count == 1, count % freq == 0)
        new_blocks, pieces = [], []
        for block, ((r0, r1), (c0, c1)) in zip(blocks, _grid(grad.shape, block_size), strict=True):
            g, m = grad[r0:r1, c0:c1], mu_hat[r0:r1, c0:c1]
            left = ema(jnp.matmul(g, g.T, precision=_HIGHEST), block.left, b2)
            right = ema(jnp.matmul(g.T, g, precision=_HIGHEST), block.right, b2)

            def roots(left, right, _):
                # The statistics are debiased like Adam's moments so that without grafting the
                # step has the same scale from the first step on.
                return (
                    symmetric_inverse_root(debias(left, b2, count), 4, eps),
                    symmetric_inverse_root(debias(right, b2, count), 4, eps),
                )

            def keep(left, right, old):
                return old

            left_root, right_root = lax.cond(
                refresh, roots, keep, left, right, (block.left_root, block.right_root)
            )
            direction = jnp.matmul(
                jnp.matmul(left_root, m, precision=_HIGHEST), right_root, precision=_HIGHEST
            )
            if grafting != "none":
                # Layer-wise (here block-wise) grafting: Shampoo's direction, the grafted
                # method's step length.
                graft_norm = jnp.linalg.norm(graft[r0:r1, c0:c1])
                norm = jnp.linalg.norm(direction)
                tiny = jnp.finfo(direction.dtype).tiny
                direction = direction * (graft_norm / jnp.maximum(norm, tiny))
            new_blocks.append(_Block(left, right, left_root, right_root))
            pieces.append(direction)
        direction = _assemble(pieces, grad.shape, block_size)
        return direction, mu, nu, tuple(new_blocks)

    return preconditioned_adam(blocks, _update_leaf)


def _assemble(pieces, shape, block_size):
    num_cols = len(block_bounds(shape[1], block_size))
    rows = [
        jnp.concatenate(pieces[i : i + num_cols], axis=1) for i in range(0, len(pieces), num_cols)
    ]
    return jnp.concatenate(rows, axis=0)


def _shampoo_chain(
    learning_rate, b1, b2, eps, precondition_frequency, block_size, grafting
) -> optax.GradientTransformation:
    return optax.chain(
        scale_by_shampoo(b1, b2, eps, precondition_frequency, block_size, grafting),
        optax.scale_by_learning_rate(learning_rate),
    )


def shampoo(
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-12,
    precondition_frequency: int = 10,
    block_size: int = 1024,
    grafting: str = "adam",
) -> optax.GradientTransformationExtraArgs:
    r"""Shampoo: a Kronecker-factored preconditioner for matrix parameters.

    For a matrix parameter with gradient $G_t$ and first moment $M_t$ (decay `b1`,
    debiased), Shampoo keeps $L_t = b_2 L_{t-1} + (1 - b_2) G_t G_t^\top$ and
    $R_t = b_2 R_{t-1} + (1 - b_2) G_t^\top G_t$ (debiased like Adam's moments) and steps along

    $$D_t = (\hat L + \epsilon I)^{-1/4}\, M_t\, (\hat R + \epsilon I)^{-1/4},$$

    with the inverse fourth roots computed by `eigh` at the first step and every
    `precondition_frequency` steps (stale in between, as in practice). Matrices with a side
    longer than `block_size` are cut into blocks of at most `block_size` x `block_size`, each
    preconditioned on its own (Anil et al.'s blocking), so the cost per step is bounded.

    Grafting takes the step length from a simpler method, block by block:
    $D \leftarrow D\, \lVert A \rVert_F / \lVert D \rVert_F$ with $A$ the Adam direction
    (`"adam"`) or the momentum $M_t$ (`"sgd"`); `"none"` uses $D$ as it is. Leaves that are not
    matrices step with the grafted method (Adam for `"adam"` and `"none"`, momentum SGD for
    `"sgd"`).

    The returned transformation is wrapped in `optax.inject_hyperparams`: the float
    hyperparameters (and `precondition_frequency`) live in the state as arrays
    (`state.hyperparams["learning_rate"]`), so changing them does not recompile.

    **Arguments:**

    - `learning_rate`: a float or an optax schedule.
    - `b1`: decay of the first moment (momentum).
    - `b2`: decay of the statistics `L`, `R` and of Adam grafting's second moment.
    - `eps`: added to the statistics before the inverse root.
    - `precondition_frequency`: steps between recomputations of the inverse roots.
    - `block_size`: the largest side of a preconditioned block.
    - `grafting`: `"adam"`, `"sgd"` or `"none"`.

    **Returns:** an `optax.GradientTransformationExtraArgs`.

    **Example:**

    ```python
    import optax

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    loss = lambda p: jnp.sum((jnp.arange(3.0) @ p["w"] + p["b"] - 1.0) ** 2)
    tx = js.optimizers.shampoo(learning_rate=0.1, block_size=2)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < loss({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
    ```

    **References:** Gupta, Koren, Singer, "Shampoo: Preconditioned Stochastic Tensor
    Optimization", ICML 2018; Anil, Gupta, Koren, Regan, Singer, "Scalable Second Order
    Optimization for Deep Learning", arXiv:2002.09018, 2020 (blocking, grafting); Morwani,
    Shapira, Vyas, Malach, Kakade, Janson, "A New Perspective on Shampoo's Preconditioner",
    arXiv:2406.17748, 2024.
    """
    check_option("grafting", grafting, _GRAFTINGS)
    check_positive("eps", eps, allow_zero=True)
    for name, value in (
        ("precondition_frequency", precondition_frequency),
        ("block_size", block_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return optax.inject_hyperparams(_shampoo_chain, static_args=("block_size", "grafting"))(
        learning_rate, b1, b2, eps, precondition_frequency, block_size, grafting
    )
