"""The one tqdm adapter of the command line: a progress callback ``(done, total)`` drawn as a bar."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


class Bar:
    """A tqdm bar on stderr, made on the first report (so an error before any work prints no empty bar).

    Args:
        unit: what is counted ("slice", "case", "step").
        desc: the bar's label.
        fractional: ``done`` may be fractional (cases with the slices of the current one).

    Call it as ``bar(done, total)``; ``bar.describe(text, **postfix)`` sets the label and the figures
    after the bar; :meth:`close` ends it (also done when ``done`` reaches ``total``).
    """

    def __init__(self, unit: str, desc: str | None = None, fractional: bool = False):
        self.unit, self.desc, self.fractional = unit, desc, fractional
        self.bar: tqdm | None = None

    def __call__(self, done: float, total: int) -> None:
        bar = self.bar
        if bar is None:
            from tqdm import tqdm

            fmt = (
                ("{l_bar}{bar}| {n:.1f}/{total} " + self.unit + "s [{elapsed}<{remaining}]")
                if self.fractional
                else None
            )
            bar = self.bar = tqdm(
                desc=self.desc,
                total=total,
                initial=0,
                unit=self.unit,
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format=fmt,
            )
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)
        if done >= total:
            self.close()

    def describe(self, text: str, **postfix) -> None:
        """Label and figures of a bar already drawn (no-op before the first report)."""
        if self.bar is not None:
            self.bar.set_description(text)
            self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.close()
