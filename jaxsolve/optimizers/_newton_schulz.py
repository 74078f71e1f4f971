"""Newton-Schulz orthogonalisation with AOL preconditioning, and Turbo-Muon built on it."""

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from .._core import check_positive
from ._matrix import adam_direction, cast, debias, ema, increment, is_matrix, preconditioned_adam

# The quintic of Muon (Jordan et al., 2024): the largest slope at zero for which the iteration
# still maps (0, 1] into roughly [0.7, 1.2]; it trades exact convergence for speed.
MUON_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# The classical cubic Newton-Schulz iteration X <- 1.5 X - 0.5 X X^T X: converges
# quadratically to the exact polar factor once all singular values lie in (0, sqrt(3)).
CUBIC_COEFFICIENTS = (1.5, -0.5, 0.0)


def _step(x, gram, coefficients):
    """One Newton-Schulz step `a X + (b A + c A^2) X` with `A = X X^T` given."""
    a, b, c = coefficients
    dtype = x.dtype
    polynomial = cast(jnp.asarray(b), dtype) * gram + cast(jnp.asarray(c), dtype) * (gram @ gram)
    return cast(jnp.asarray(a), dtype) * x + polynomial @ x


def _gram(x):
    return x @ jnp.swapaxes(x, -1, -2)


def newton_schulz(
    G: Float[Array, "*batch m n"],
    num_steps: int = 5,
    preconditioned: bool = True,
    *,
    coefficients: tuple[float, float, float] = MUON_COEFFICIENTS,
    eps: float = 1e-8,
) -> Float[Array, "*batch m n"]:
    r"""An approximation of the polar factor $U V^\top$ of $G = U \Sigma V^\top$ by
    Newton-Schulz iterations, optionally preconditioned as in Turbo-Muon.

    Each step maps $X \mapsto a X + (b A + c A^2) X$ with $A = X X^\top$ (the smaller Gram
    matrix: a tall $G$ is transposed first), which pushes every singular value of $X$ towards 1
    provided they start in $(0, 1]$. The start decides how many steps that takes:

    - `preconditioned=False` divides by the Frobenius norm (Muon's start): safe, but the
      singular values start at $\sigma_i / \lVert G \rVert_F$, far below 1.
    - `preconditioned=True` rescales the rows by the AOL diagonal (Prach and Lampert, 2022),
      $X_0 = S G$ with $S = \operatorname{diag}(\sum_j |A_{ij}|)^{-1/2}$ and $A = G G^\top$,
      which guarantees $\lVert X_0 \rVert_2 \le 1$ and brings the singular values much closer
      to 1. The Gram matrix of $X_0$ is $S A S$, so the first step reuses $A$: the
      preconditioning costs no extra matrix product, and one step fewer reaches the same
      orthogonality (Boissin et al., 2025). The iteration then converges to the polar factor
      of $S G$, not of $G$: they differ by a few per cent (1.6-2.5% RMS on Gaussian
      matrices), which the paper finds harmless for Muon's updates.

    **Arguments:**

    - `G`: a matrix, or a stack of matrices (leading batch axes).
    - `num_steps`: the number of Newton-Schulz steps (a Python int).
    - `preconditioned`: AOL preconditioning (True) or Frobenius normalisation (False).
    - `coefficients`: `(a, b, c)` of the odd polynomial; `MUON_COEFFICIENTS` (default) for
      Muon's fast quintic, `CUBIC_COEFFICIENTS` for the classical iteration that converges to
      the exact polar factor.
    - `eps`: guards the normalisations against a zero matrix.

    **Returns:** an array like `G`, approximately orthogonal: $X X^\top \approx I$ for a wide
    `G`, $X^\top X \approx I$ for a tall one.

    **Example:**

    ```python
    G = jax.random.normal(jax.random.key(0), (16, 32))
    U = js.optimizers.newton_schulz(G, num_steps=4)  # Turbo-Muon's default
    sigma = jnp.linalg.svd(U, compute_uv=False)  # Muon's quintic: all in about [0.7, 1.2]
    assert sigma.min() > 0.6 and sigma.max() < 1.25
    cubic = (1.5, -0.5, 0.0)  # the classical iteration converges to U V^T itself
    U = js.optimizers.newton_schulz(G, 20, preconditioned=False, coefficients=cubic)
    u, _, vt = jnp.linalg.svd(G, full_matrices=False)
    assert jnp.allclose(U, u @ vt, atol=1e-4)
    ```

    **References:** Boissin, Massena, Mamalet, Serrurier, "Turbo-Muon: Accelerating
    Orthogonality-Based Optimization with Pre-Conditioning", arXiv:2512.04632, 2025; Prach and
    Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz Networks", ECCV
    2022; Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024.
    """
    if jnp.ndim(G) < 2:
        raise ValueError(f"`G` must be a matrix (or a stack of them), got shape {jnp.shape(G)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"`num_steps` must be an int >= 0, got {num_steps!r}")
    if len(coefficients) != 3:
        raise ValueError(f"`coefficients` must be (a, b, c), got {coefficients!r}")
    check_positive("eps", eps)
    x = jnp.asarray(G)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    eps = cast(jnp.asarray(eps), x.dtype)
    if preconditioned:
        gram = _gram(x)
        row_sums = jnp.sum(jnp.abs(gram), axis=-1)
        scale = jax.lax.rsqrt(jnp.maximum(row_sums, eps))
        x = scale[..., :, None] * x
        if num_steps > 0:
            x = _step(x, scale[..., :, None] * gram * scale[..., None, :], coefficients)
        remaining = num_steps - 1
    else:
        norm = jnp.sqrt(jnp.sum(x**2, axis=(-2, -1), keepdims=True))
        x = x / (norm + eps)
        remaining = num_steps
    for _ in range(max(remaining, 0)):
        x = _step(x, _gram(x), coefficients)
    return jnp.swapaxes(x, -1, -2) if tall else x


def scale_by_turbo_muon(
    momentum: float = 0.95,
    ns_steps: int = 4,
    nesterov: bool = True,
    *,
    preconditioned: bool = True,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Turbo-Muon's direction without the learning rate (see `turbo_muon`). With
    `preconditioned=False` and `ns_steps=5` it is `optax.contrib.muon`'s direction."""

    def leaf(grad, mu, nu, count):
        if not is_matrix(grad):
            # As optax's muon: Adam (NAdam when nesterov) for biases, scalars and tensors.
            direction, mu, nu = adam_direction(
                grad, mu, nu, adam_b1, adam_b2, adam_eps, count, nesterov
            )
            return direction, mu, nu
        mu = ema(grad, mu, momentum)
        if nesterov:
            # The bias-corrected Nesterov look-ahead, in optax's form.
            beta = cast(momentum, grad.dtype)
            direction = beta * debias(mu, momentum, increment(count)) + (1 - beta) * debias(
                grad, momentum, count
            )
        else:
            direction = debias(mu, momentum, count)
        direction = newton_schulz(direction, ns_steps, preconditioned)
        # Muon's width scaling for a (fan_in, fan_out) matrix: sqrt(max(1, fan_out / fan_in)).
        fan_in, fan_out = grad.shape
        return direction * max(1.0, fan_out / fan_in) ** 0.5, mu, nu

    def update_leaf(grad, mu, nu, preconditioner, count):
        return (*leaf(grad, mu, nu, count), preconditioner)

    # the plumbing of SOAP and Shampoo, with no preconditioner state
    return preconditioned_adam(lambda param: None, update_leaf)


def _turbo_muon_chain(learning_rate, momentum, ns_steps, nesterov, preconditioned=True):
    return optax.chain(
        scale_by_turbo_muon(momentum, ns_steps, nesterov, preconditioned=preconditioned),
        optax.scale_by_learning_rate(learning_rate),
    )


def turbo_muon(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.95,
    ns_steps: int = 4,
    nesterov: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Turbo-Muon: Muon whose Newton-Schulz orthogonalisation starts from an AOL-preconditioned
    matrix, so that four steps do the work of Muon's five.

    For each matrix parameter (shape `(fan_in, fan_out)`), the momentum
    $M_t = \beta M_{t-1} + (1 - \beta) G_t$ (bias-corrected, with optax's Nesterov
    look-ahead when `nesterov`) is orthogonalised by `newton_schulz(M, ns_steps,
    preconditioned=True)` and scaled by Muon's $\sqrt{\max(1, \text{fan\_out}/\text{fan\_in})}$.
    Every other leaf (biases, scalars, tensors) steps with Adam ($b_1 = 0.9$, $b_2 = 0.999$,
    $\epsilon = 10^{-8}$; NAdam's look-ahead when `nesterov`), as `optax.contrib.muon` does. The update is the negative learning
    rate times the direction (no weight decay; chain `optax.add_decayed_weights` before the
    learning rate if you want it).

    The returned transformation is wrapped in `optax.inject_hyperparams`: the learning rate
    and momentum live in the state as arrays (`state.hyperparams["learning_rate"]`), so
    changing them does not recompile.

    **Arguments:**

    - `learning_rate`: a float or an optax schedule.
    - `momentum`: the decay of the momentum.
    - `ns_steps`: Newton-Schulz steps (Muon uses 5 without preconditioning).
    - `nesterov`: Nesterov momentum.

    **Returns:** an `optax.GradientTransformationExtraArgs`.

    **Example:**

    ```python
    import optax

    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    loss = lambda p: jnp.sum((jnp.arange(3.0) @ p["w"] + p["b"] - 1.0) ** 2)
    tx = js.optimizers.turbo_muon(learning_rate=0.05)
    state = tx.init(params)
    for _ in range(3):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < loss({"w": jnp.ones((3, 2)), "b": jnp.zeros(2)})
    ```

    **References:** Boissin, Massena, Mamalet, Serrurier, "Turbo-Muon: Accelerating
    Orthogonality-Based Optimization with Pre-Conditioning", arXiv:2512.04632, 2025; Jordan et
    al., "Muon: An optimizer for hidden layers in neural networks", 2024.
    """
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
        raise ValueError(f"`ns_steps` must be a positive int, got {ns_steps!r}")
    return optax.inject_hyperparams(_turbo_muon_chain, static_args=("ns_steps",))(
        learning_rate, momentum, ns_steps, nesterov
    )
