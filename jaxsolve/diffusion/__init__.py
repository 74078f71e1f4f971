"""jaxsolve.diffusion (under construction)."""
