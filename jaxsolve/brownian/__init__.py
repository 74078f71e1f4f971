"""jaxsolve.brownian (under construction)."""
