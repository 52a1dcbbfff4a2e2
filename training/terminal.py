"""Terminal tables that stay whole at any console width: value columns spread over as many tables as
needed, each repeating the row labels, instead of rich shrinking columns and cutting cells with "…"."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

# natural widths are measured on a console wider than any table
_MEASURE = Console(width=100_000)


def _table(
    lead: Sequence[str], labels: Sequence[Sequence[str]], columns: Mapping[str, Sequence[str]]
) -> Table:
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, name in enumerate(lead):  # row labels: the first left-aligned, further ones are counts
        t.add_column(name, justify="right" if i else "left", no_wrap=True)
    for name in columns:
        t.add_column(name, justify="right", no_wrap=True)
    for row, label in enumerate(labels):
        t.add_row(*label, *(cells[row] for cells in columns.values()))
    return t


def column_blocks(
    title: str,
    lead: Sequence[str],
    labels: Sequence[Sequence[str]],
    columns: Mapping[str, Sequence[str]],
    width: int,
) -> Group:
    """``title``, then tables of the ``lead`` columns (one label cell per lead column and row; the first
    left-aligned, the others right) and as many of ``columns`` (header -> one cell per row, in order) as
    fit in ``width`` terminal columns.

    A column is never split or cut; one too wide on its own gets a table to itself.
    """
    blocks: list[list[str]] = []
    for name in columns:
        trial = [*blocks[-1], name] if blocks else [name]
        natural = _MEASURE.measure(_table(lead, labels, {c: columns[c] for c in trial})).maximum
        if blocks and natural <= width:
            blocks[-1] = trial
        else:
            blocks.append([name])
    parts: list[Text | Table] = [Text(title, style="bold")]
    for i, block in enumerate(blocks):
        parts += [Text("")] * (i > 0) + [_table(lead, labels, {c: columns[c] for c in block})]
    return Group(*parts)
