"""The Pareto front of accuracy against a cost (latency, size, MACs).

A model is on the front when no other model is at least as cheap *and* at least as accurate
while being strictly better in one of the two. Ties (the same cost and accuracy) keep both.
"""

from __future__ import annotations

from collections.abc import Sequence

from slimkit.report.data import StageRow

__all__ = ["pareto_front", "pareto_rows", "rows_with"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, accuracy)`` points (lower cost and higher
    accuracy are better), sorted by cost."""
    front = []
    for i, (c, a) in enumerate(points):
        dominated = any(
            c2 <= c and a2 >= a and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def rows_with(rows: Sequence[StageRow], cost: str) -> list[StageRow]:
    """The rows that have both ``top1`` and the ``cost`` field measured."""
    return [r for r in rows if r.top1 is not None and getattr(r, cost) is not None]


def pareto_rows(rows: Sequence[StageRow], cost: str) -> list[StageRow]:
    """The rows on the accuracy-vs-``cost`` front (rows missing either value are left out)."""
    usable = rows_with(rows, cost)
    idx = pareto_front([(float(getattr(r, cost)), float(r.top1)) for r in usable])  # type: ignore[arg-type]
    return [usable[i] for i in idx]
