"""Several topology algorithms on one model, stepped together (e.g. SET every epoch plus Importance Pruning
every few epochs, as in the truly-sparse-at-scale runs)."""

from __future__ import annotations

from typing import Any

from sparta.topology.base import TopologyAlgorithm


class Chain:
    """``Chain(SET(...), ImportancePruning(...))``: :meth:`step` steps each algorithm in order (each keeps its
    own schedule); ``time_in_updates`` and ``stats`` are the members' combined; the state dict holds each
    member's under its position."""

    def __init__(self, *algorithms: TopologyAlgorithm) -> None:
        if not algorithms:
            raise ValueError("Chain needs at least one topology algorithm")
        for a in algorithms:
            if not isinstance(a, TopologyAlgorithm):
                raise TypeError(f"Chain takes topology algorithms, got {type(a).__name__}")
        self.algorithms = list(algorithms)

    @property
    def t(self) -> int:
        return self.algorithms[0].t

    @property
    def time_in_updates(self) -> float:
        return sum(a.time_in_updates for a in self.algorithms)

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for a in self.algorithms:
            for name, s in a.stats.items():
                out[name] = {**out.get(name, {}), **s}
        return out

    @property
    def needs_dense_grad(self) -> bool:
        """Whether every member needs the step's gradient (RigL): only then may a training loop not defer."""
        return all(a.needs_dense_grad for a in self.algorithms)

    @property
    def pending(self) -> bool:
        """Whether a member has an update :meth:`step` deferred."""
        return any(a.pending for a in self.algorithms)

    def step(self, defer: bool = False) -> bool:
        """Count one optimizer step in every member; True when any of them updated the topology. With ``defer``,
        a member's due update waits for :meth:`run_pending` (except a member that needs the step's gradient,
        RigL, which updates now), as :meth:`TopologyAlgorithm.step` does."""
        ran = [a.step(defer=defer and not a.needs_dense_grad) for a in self.algorithms]
        return any(ran)

    def run_pending(self) -> bool:
        """Run the members' deferred updates, in member order; True when any ran."""
        ran = [a.run_pending() for a in self.algorithms]
        return any(ran)

    def state_dict(self) -> dict[str, Any]:
        """The states of the chained algorithms, in order."""
        return {"chain": [a.state_dict() for a in self.algorithms]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore each chained algorithm from a :meth:`state_dict` of a chain of the same length."""
        states = state.get("chain") if isinstance(state, dict) else None
        if not isinstance(states, list) or len(states) != len(self.algorithms):
            raise ValueError(f"the state is not that of a Chain of {len(self.algorithms)} algorithms")
        for a, s in zip(self.algorithms, states, strict=True):
            a.load_state_dict(s)

    def __repr__(self) -> str:
        return f"Chain({', '.join(type(a).__name__ for a in self.algorithms)})"
