"""An injected clock and sleep that advance together, for code that waits (house rule 6)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeTime:
    """``clock`` reads ``now``; ``sleep`` records the wait and moves ``now`` past it at once."""

    now: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
