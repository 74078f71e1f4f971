"""jaxsolve.optimizers (under construction)."""
