"""jaxsolve.implicit (under construction)."""
