"""What both curvature operators share: the samples per group and which groups have any."""

from __future__ import annotations

from torch import Tensor


class GroupOperator:
    """A curvature operator over ``K`` groups of samples; :attr:`counts` holds their sizes."""

    counts: Tensor
    dim: int

    def present(self) -> list[int]:
        """Groups with at least one sample."""
        return [a for a in range(len(self.counts)) if self.counts[a] > 0]
