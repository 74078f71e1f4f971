"""jaxsolve.nonlinear (under construction)."""
