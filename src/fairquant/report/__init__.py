"""Reports: terminal tables and figures of an audit."""

from fairquant.report.figures import plot_group_accuracy
from fairquant.report.tables import accuracy_table
from fairquant.report.verdict import outward

__all__ = ["accuracy_table", "outward", "plot_group_accuracy"]
