"""The run report: one self-contained HTML page (`evolinstruct report RUN_DIR -o report.html`)."""

from .builder import build_report
from .data import ReportError

__all__ = ["ReportError", "build_report"]
