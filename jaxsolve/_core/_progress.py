"""Opt-in progress meters that work inside `jit` and under `vmap`.

A meter is an `equinox.Module` with pure `init`/`step`/`close`; the device side only keeps the
last reported percentage (an int32), and reports through `jax.debug.callback` when it grows.
The callbacks are module-level functions, so a second call with new values reuses the compiled
program. Under `vmap` the callback runs once per lane; the host side keeps the maximum, so the
bar still moves monotonically.
"""

import abc
import sys
import threading

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int

_lock = threading.Lock()
_bars: dict[str, object] = {}
_last_percent: dict[str, int] = {}


class AbstractProgressMeter(eqx.Module):
    """Base class for progress meters; subclass and implement `_show` / `_finish` (host side)."""

    label: str = "jaxsolve"
    granularity: int = 5

    def init(self) -> Int[Array, ""]:
        """The state: the last percentage reported (starts at -1)."""
        return jnp.array(-1, dtype=jnp.int32)

    def step(self, state: Int[Array, ""], fraction) -> Int[Array, ""]:
        """Report `fraction` in [0, 1] if it moved by at least `granularity` percent."""
        fraction = jnp.clip(jnp.asarray(fraction, dtype=jnp.float32), 0.0, 1.0)
        percent = (jnp.floor(fraction * 100 / self.granularity) * self.granularity).astype(
            jnp.int32
        )

        def report(p):
            jax.debug.callback(self._show_callback, p)
            return p

        return lax.cond(percent > state, report, lambda p: state, percent)

    def close(self, state: Int[Array, ""]) -> Int[Array, ""]:
        """Finish the meter (prints the closing line). Returns `state` tied to the callback."""
        jax.debug.callback(self._finish_callback, state)
        return state

    def _show_callback(self, percent) -> None:
        percent = int(percent)
        with _lock:
            if percent <= _last_percent.get(self.label, -1):
                return
            _last_percent[self.label] = percent
            self._show(percent)

    def _finish_callback(self, _state) -> None:
        with _lock:
            if self.label not in _last_percent:
                return
            del _last_percent[self.label]
            self._finish()

    @abc.abstractmethod
    def _show(self, percent: int) -> None:
        """Host side: show `percent` (called with the lock held, only when it grew)."""

    @abc.abstractmethod
    def _finish(self) -> None:
        """Host side: end the display."""


class NoProgressMeter(AbstractProgressMeter):
    """Shows nothing; costs nothing."""

    def step(self, state, fraction):
        return state

    def close(self, state):
        return state

    def _show(self, percent: int) -> None:
        pass

    def _finish(self) -> None:
        pass


class TextProgressMeter(AbstractProgressMeter):
    """Plain text on stderr: `label: 45%`, rewritten in place, newline at 100% or close."""

    def _show(self, percent: int) -> None:
        sys.stderr.write(f"\r{self.label}: {percent:3d}%")
        sys.stderr.flush()

    def _finish(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


class TqdmProgressMeter(AbstractProgressMeter):
    """A tqdm bar (requires the `progress` extra: `pip install jaxsolve[progress]`)."""

    def _show(self, percent: int) -> None:
        import tqdm

        bar = _bars.get(self.label)
        if bar is None:
            bar = tqdm.tqdm(total=100, desc=self.label, unit="%", leave=True)
            _bars[self.label] = bar
        bar.update(percent - bar.n)

    def _finish(self) -> None:
        bar = _bars.pop(self.label, None)
        if bar is not None:
            bar.close()


def make_progress_meter(progress, label: str) -> AbstractProgressMeter:
    """Turn an entry point's `progress=` argument into a meter.

    `False` gives `NoProgressMeter`; `True` gives tqdm when installed and text otherwise; a meter
    instance is used as it is.
    """
    if isinstance(progress, AbstractProgressMeter):
        return progress
    if progress is True:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return TextProgressMeter(label=label)
        return TqdmProgressMeter(label=label)
    if progress is False or progress is None:
        return NoProgressMeter(label=label)
    raise TypeError(f"`progress` must be a bool or a progress meter, got {type(progress).__name__}")
