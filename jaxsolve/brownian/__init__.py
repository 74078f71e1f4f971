"""jaxsolve.brownian: single-seed Brownian motion with space-time(-time) Lévy areas.

`VirtualBrownianTree(t0, t1, tol, shape, key, levy_area=...)` is a Brownian path (with its
Lévy areas `H`, `K`) that one key determines completely and that can be queried anywhere in
`[t0, t1]`; `AbstractBrownianPath` is the interface SDE solvers use; `BrownianIncrement` is
what a query returns.
"""

from ._base import (
    AbstractBrownianPath as AbstractBrownianPath,
    BrownianIncrement as BrownianIncrement,
)
from ._tree import VirtualBrownianTree as VirtualBrownianTree
