"""The pattern learner's settings and the names its steps share (`patterns`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput

#: what a run can be cheaper in: an `ExecutionFacts` field each
METRICS = ("tokens", "latency_ms", "cost")
#: candidate order; of conditions picking the same executions in a context the first is tested
FEATURE_TYPES = ("agent", "task", "prompt", "model", "config", "tool", "tool_pair", "tag", "error")
#: statuses counted as success / failure with `outcome="status"` (running ones are left out)
SUCCESS_STATUSES = frozenset({"succeeded"})
FAILURE_STATUSES = frozenset({"failed", "timeout"})


@dataclass(frozen=True)
class MinerSettings:
    """Every knob of a mining run, with its default (`find_patterns`)."""

    outcome: str = "reward"  # "reward": mean linked reward; "status": succeeded vs failed/timeout
    min_support: int = 20  # executions needed on each side of a condition, in every test
    fdr: float = 0.05  # Benjamini–Hochberg level over every test of the run
    max_values: int = 20  # most frequent values of a categorical config key tested
    sample_spans: int = 5  # span ids of each side shown in the evidence
    agent_check: bool = True  # drop findings of mixed-agent contexts that agent explains

    def __post_init__(self) -> None:
        if self.outcome not in ("reward", "status"):
            raise InvalidInput('outcome must be "reward" or "status"', field="outcome")
        if self.min_support < 1:
            raise InvalidInput("min_support must be at least 1", field="min_support")
        if not 0.0 < self.fdr < 1.0:
            raise InvalidInput("fdr must be between 0 and 1", field="fdr")
