"""Static sparse training: the initial random topology is kept."""

from sparta.topology.base import TopologyAlgorithm


class Static(TopologyAlgorithm):
    """Keeps the topology; ``step()`` only counts steps, so runs can switch algorithms freely."""

    def due(self, t: int) -> bool:
        """Never: a static topology does not change."""
        return False
