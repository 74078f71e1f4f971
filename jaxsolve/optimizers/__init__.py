"""Optimisers that plug into optax, gradient estimators and consensus-based optimisation.

Every optimiser here is an `optax.GradientTransformation` (composes with `optax.chain`); the
gradient estimators and `cbo_minimize` follow the solver contract of `jaxsolve._core`
(hyperparameters as array fields, an `AbstractSolution` returned by entry points).
"""
