"""jaxsolve.brownian: single-seed Brownian motion with space-time(-time) Lévy areas.

`VirtualBrownianTree(t0, t1, tol, shape, key, levy_area=...)` is a Brownian path (with its
Lévy areas `H`, `K`) that one key determines completely and that can be queried anywhere in
`[t0, t1]`; `GridBrownianPath(t0, t1, num_steps, shape, key, ...)` draws the independent
increments of a fixed grid directly (the fast path of fixed-step solves);
`AbstractBrownianPath` is the interface SDE solvers use; `BrownianIncrement` is what a query
returns.
"""

from ._base import (
    AbstractBrownianPath as AbstractBrownianPath,
    BrownianIncrement as BrownianIncrement,
)
from ._grid import GridBrownianPath as GridBrownianPath
from ._tree import VirtualBrownianTree as VirtualBrownianTree
