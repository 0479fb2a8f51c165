"""Progress bars for a comparison: rich in a terminal, tqdm's widgets in a notebook.

A comparison calls a *progress factory* ``start(description, total)`` once per bar and
then the ``advance(amount)`` function it returns; ``progress_bars`` builds the factory
that fits where Python runs, and closes its bars on exit.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[str, float], Callable[[float], None]]
"""Start a progress bar (description, total) and get its ``advance`` function."""


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where a terminal bar would print one line per refresh."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ipython = getattr(shell, "get_ipython", lambda: None)()
    if ipython is None:
        return False
    # a kernel (Jupyter, VS Code, Colab's Shell subclass) has IPKernelApp in its config; a terminal IPython has not
    return "IPKernelApp" in (getattr(ipython, "config", None) or {}) or type(ipython).__name__ == "ZMQInteractiveShell"


@contextmanager
def rich_bars() -> Iterator[Progress]:
    """Bars on stderr (so stdout stays clean for the summary), one line each, kept when done."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

    with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=False) as bars:

        def start(description: str, total: float) -> Callable[[float], None]:
            task_id = bars.add_task(description, total=total)
            return lambda amount: bars.advance(task_id, amount)

        yield start


@contextmanager
def tqdm_bars() -> Iterator[Progress]:
    """tqdm.auto: a widget bar in Jupyter (text if ipywidgets is missing)."""
    from tqdm.auto import tqdm

    opened: list[tqdm] = []

    def start(description: str, total: float) -> Callable[[float], None]:
        bar = tqdm(total=total, desc=description, leave=True)
        opened.append(bar)
        return bar.update

    try:
        yield start
    finally:
        for bar in opened:
            bar.close()


@contextmanager
def progress_bars(show: bool | Progress = True) -> Iterator[Progress | None]:
    """The factory for ``show``: True picks rich or tqdm, False none, a callable is used as it is."""
    if callable(show):
        yield show
    elif not show:
        yield None
    else:
        with (tqdm_bars() if in_notebook() else rich_bars()) as start:
            yield start
