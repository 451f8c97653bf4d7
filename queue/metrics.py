"""Prometheus text exposition for /metrics, small enough not to need a client library."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Claim statements take well under a millisecond on an idle queue; buckets resolve that
# range and still show a pathological 100 ms.
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """A cumulative histogram of seconds."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = CLAIM_BUCKETS) -> None:
        self.name = name
        self.help_text = help_text
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.total += 1
        self.sum += seconds
        for index, bound in enumerate(self.buckets):
            if seconds <= bound:
                self.counts[index] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {count}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.total}')
        lines.append(f"{self.name}_sum {self.sum:.6f}")
        lines.append(f"{self.name}_count {self.total}")
        return lines


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(status_counts: Iterable[tuple[str, str, int]], online: int, claim_latency: Histogram, *,
           backend: str, parked: Mapping[str, int], usage: tuple[int, int, float] = (0, 0, 0.0)) -> str:
    """The whole /metrics page: task counts and liveness are the database's, claim latency this replica's."""
    lines = ["# HELP da_replica_info The database this replica of the queue runs on.",
             "# TYPE da_replica_info gauge", f'da_replica_info{{backend="{_label(backend)}"}} 1',
             "# HELP da_tasks Tasks by status and type.", "# TYPE da_tasks gauge"]
    for status, task_type, count in status_counts:
        lines.append(f'da_tasks{{status="{_label(status)}",type="{_label(task_type)}"}} {count}')
    lines += ["# HELP da_machines_online Machines that polled or heartbeated recently.",
              "# TYPE da_machines_online gauge", f"da_machines_online {online}",
              "# HELP da_long_polls_parked Long-polls this replica holds open right now, by route.",
              "# TYPE da_long_polls_parked gauge"]
    lines += [f'da_long_polls_parked{{route="{_label(route)}"}} {count}' for route, count in sorted(parked.items())]
    lines += claim_latency.render()
    input_tokens, output_tokens, cost = usage
    lines += ["# HELP da_agent_tokens Tokens agents reported, over every task kept.", "# TYPE da_agent_tokens gauge",
              f'da_agent_tokens{{direction="input"}} {input_tokens}',
              f'da_agent_tokens{{direction="output"}} {output_tokens}',
              "# HELP da_agent_cost_usd Cost agents reported, in USD, over every task kept.",
              "# TYPE da_agent_cost_usd gauge", f"da_agent_cost_usd {cost:.6f}"]
    return "\n".join(lines) + "\n"
