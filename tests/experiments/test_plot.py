"""The experiments' figures: every series looks different, and plotting leaves matplotlib's global
state (the backend, pyplot) alone."""

import itertools
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxsolve.experiments._plot import line_plot, scatter_plot, series_style

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("num_series", [5, 21, 40])
def test_no_two_series_look_alike(num_series):
    styles = [series_style(i) for i in range(num_series)]
    looks = {(s["color"], s["marker"], s["linestyle"]) for s in styles}
    assert len(looks) == num_series
    # Two series of one colour must also differ in marker and in line style: a legend entry
    # is matched to its curve at a glance, and a shared colour alone misleads.
    for a, b in itertools.combinations(styles, 2):
        if a["color"] == b["color"]:
            assert a["marker"] != b["marker"] and a["linestyle"] != b["linestyle"]


def test_line_plot_skips_points_a_log_axis_cannot_show(tmp_path):
    x = np.array([1.0, 2.0, 4.0, 8.0])
    name = line_plot(
        tmp_path / "p.png",
        {f"s{i}": (x, np.array([1.0, np.nan, 0.0, np.inf]) * 10.0**-i) for i in range(21)},
        title="t",
        logx=True,
        logy=True,
    )
    data = (tmp_path / name).read_bytes()
    assert name == "p.png" and data[:8] == PNG
    # 21 series put the legend beside the axes: the figure is wider than the default 6.4 in.
    width = int.from_bytes(data[16:20], "big")
    assert width > 6.4 * 110


def test_scatter_plot_writes_one_panel_per_group(tmp_path):
    rng = np.random.default_rng(0)
    groups = {"data": rng.normal(size=(50, 2)), "samples": rng.normal(size=(50, 2))}
    data = (tmp_path / scatter_plot(tmp_path / "s.png", groups, title="t")).read_bytes()
    assert data[:8] == PNG


def test_plotting_leaves_the_backend_and_pyplot_alone(tmp_path):
    """A notebook user's backend must survive an experiment: the library never calls
    `matplotlib.use` and never imports pyplot (whose figures would stay alive until closed)."""
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib

        matplotlib.use("svg")
        from jaxsolve.experiments._plot import line_plot, scatter_plot

        line_plot({str(tmp_path / "a.png")!r}, {{"s": ([1, 2], [3.0, 4.0])}}, logy=True)
        scatter_plot({str(tmp_path / "b.png")!r}, {{"g": [[0.0, 1.0], [1.0, 0.0]]}})
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
