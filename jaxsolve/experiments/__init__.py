"""The runnable experiments that `configs/` name (`jaxsolve run CONFIG`)."""

from ._registry import (
    ConfigError as ConfigError,
    Experiment as Experiment,
    ExperimentOutput as ExperimentOutput,
    RunContext as RunContext,
    available as available,
    check_row as check_row,
    get as get,
    quickstart_section as quickstart_section,
    register as register,
)
