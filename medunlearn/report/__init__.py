"""Clinical reports (HTML / Markdown / JSON) for unlearned and merged checkpoints."""
from medunlearn.report.render import render_report

__all__ = ["render_report"]
