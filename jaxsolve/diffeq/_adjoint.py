"""How gradients flow through `solve`: the `adjoint=` argument (the shared family of
`jaxsolve._core`, re-exported here)."""

from .._core import (
    AbstractAdjoint as AbstractAdjoint,
    DirectAdjoint as DirectAdjoint,
    ForwardMode as ForwardMode,
    RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint,
)
