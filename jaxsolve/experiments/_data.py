"""The data sets that ship with scikit-learn, loaded for the experiments (no download)."""

import jax.numpy as jnp
import numpy as np

from ._registry import ConfigError


def digits(experiment: str, seed: int, train_fraction: float):
    """scikit-learn's 8x8 digits (1797 images, pixels scaled to [0, 1]), shuffled by `seed`.

    **Returns:** `((X_train, y_train), (X_test, y_test))`, float32 features of shape (n, 64) and
    int32 labels, the first `train_fraction` of the shuffled set for training. Raises
    `ConfigError` naming `experiment` when scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            f"experiment {experiment!r} needs scikit-learn: pip install 'jaxsolve[experiments]'"
        ) from None
    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = jnp.asarray(X[order] / 16.0, jnp.float32), jnp.asarray(y[order], jnp.int32)
    split = int(train_fraction * len(y))
    return (X[:split], y[:split]), (X[split:], y[split:])
