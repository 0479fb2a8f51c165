"""The HTML report: ``write_report(results, out)`` and ``render_from_folder(out)``.

Reads only plain data (the results dict and the Parquet tables next to it) and writes one
self-contained ``report.html`` plus every figure as an SVG file under ``figures/``.
"""

from circuitdiff.report.render import render_from_folder, write_report

__all__ = ["render_from_folder", "write_report"]
