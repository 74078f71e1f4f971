"""jaxsolve.linear (under construction)."""
