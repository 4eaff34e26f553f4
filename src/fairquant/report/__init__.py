"""Reports: terminal tables and figures of an audit."""

from fairquant.report.figures import plot_group_accuracy
from fairquant.report.tables import accuracy_table

__all__ = ["accuracy_table", "plot_group_accuracy"]
