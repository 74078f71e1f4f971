"""Shared machinery (private): results, bounded loops, progress, validation, pytree helpers."""

from ._adjoint import (
    AbstractAdjoint as AbstractAdjoint,
    AbstractUnrolledAdjoint as AbstractUnrolledAdjoint,
    DirectAdjoint as DirectAdjoint,
    ForwardMode as ForwardMode,
    RecursiveCheckpointAdjoint as RecursiveCheckpointAdjoint,
)
from ._hyper import (
    as_hyperparameter as as_hyperparameter,
    hyperparameter as hyperparameter,
)
from ._loop import (
    LoopResult as LoopResult,
    bounded_while_loop as bounded_while_loop,
    scan_steps as scan_steps,
)
from ._progress import (
    AbstractProgressMeter as AbstractProgressMeter,
    NoProgressMeter as NoProgressMeter,
    TextProgressMeter as TextProgressMeter,
    TqdmProgressMeter as TqdmProgressMeter,
    make_progress_meter as make_progress_meter,
)
from ._results import RESULTS as RESULTS, check_result as check_result
from ._solution import AbstractSolution as AbstractSolution
from ._solver import (
    AbstractIterativeSolver as AbstractIterativeSolver,
    AbstractSolver as AbstractSolver,
)
from ._tree import tree_all_finite as tree_all_finite
from ._validate import (
    check_floating as check_floating,
    check_increasing as check_increasing,
    check_option as check_option,
    check_positive as check_positive,
    check_same_structure as check_same_structure,
    check_scalar as check_scalar,
    check_shape as check_shape,
    is_concrete as is_concrete,
)
