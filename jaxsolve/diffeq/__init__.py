"""jaxsolve.diffeq (under construction)."""
