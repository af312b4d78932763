"""The connections plot's title fits in its figure (it was cut at the right edge)."""

from __future__ import annotations

from sparta.train.report import figure_connections


def test_the_connections_title_is_not_cut():
    rows = [{"epoch": e, "connections": 100_000 - e, "neurons": 3000, "active_neurons": 3000} for e in range(1, 6)]
    series = [("sparse", "set", rows), ("dense", "dense", [{**r, "connections": 1_000_000} for r in rows])]
    fig = figure_connections(series)
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.axes[0].title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
    assert "3000/3000" in fig.axes[0].get_title()
