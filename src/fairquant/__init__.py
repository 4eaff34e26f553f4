"""fairquant: when you quantize a model, who pays for it?

Measure, explain and mitigate the disparate impact of quantization on groups of a classifier's data.
"""

__version__ = "0.1.0"

from fairquant import _runtime  # noqa: F401  (tunes malloc once per process; see _runtime)
