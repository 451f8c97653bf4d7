"""Which machines are alive: the declared fleet merged with who polled or heartbeated lately.

Liveness is kept in memory: it is rebuilt within one poll interval after a restart, and
writing it to SQLite would cost a write per claim.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from da.fleet import Fleet
from da.queue.models import iso
from da.queue.store import MachineCounts

# A worker's long-poll lasts at most 60 s and it is marked seen at both ends, so a live
# worker is never silent longer than this.
ONLINE_WINDOW = 75.0


@dataclass
class Sighting:
    """The last time a machine spoke to the queue and what it said it can do."""

    at: float
    capabilities: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()


@dataclass
class Roster:
    """The fleet's liveness, keyed by canonical machine name."""

    fleet: Fleet
    clock: Callable[[], float] = time.time
    sightings: dict[str, Sighting] = field(default_factory=dict)

    def seen(self, name: str, capabilities: tuple[str, ...] = (), agents: tuple[str, ...] = ()) -> None:
        """Record that `name` (or one of its aliases) is alive."""
        canonical = self.fleet.canonical(name)
        previous = self.sightings.get(canonical)
        if previous and not capabilities:
            capabilities, agents = previous.capabilities, previous.agents
        self.sightings[canonical] = Sighting(self.clock(), capabilities, agents)

    def online(self) -> list[str]:
        now = self.clock()
        return sorted(name for name, s in self.sightings.items() if now - s.at <= ONLINE_WINDOW)

    def snapshot(self, counts: dict[str, MachineCounts]) -> list[dict[str, Any]]:
        """Every declared machine, plus any undeclared one that polled, with liveness and counts."""
        now = self.clock()
        merged: dict[str, MachineCounts] = {}
        for name, count in counts.items():
            canonical = self.fleet.canonical(name)
            prior = merged.get(canonical)
            if prior is None:
                merged[canonical] = count
            else:
                merged[canonical] = MachineCounts(prior.active + count.active, prior.done + count.done,
                                                  prior.failed + count.failed, prior.top_agent or count.top_agent)
        entries = []
        declared = {machine.name for machine in self.fleet.machines}
        machines = [m.to_json() for m in self.fleet.machines]
        for name in sorted(set(self.sightings) - declared):
            seen = self.sightings[name]
            machines.append({"name": name, "role": "worker", "os": "", "tailscale_ip": "",
                             "capabilities": list(seen.capabilities), "agents": list(seen.agents),
                             "aliases": [], "declared": False})
        for entry in machines:
            sighting = self.sightings.get(entry["name"])
            count = merged.get(entry["name"], MachineCounts())
            entry.setdefault("declared", True)
            entry.update(
                online=bool(sighting and now - sighting.at <= ONLINE_WINDOW),
                last_seen=iso(sighting.at) if sighting else None,
                active=count.active,
                done=count.done,
                failed=count.failed,
                top_agent=count.top_agent,
            )
            entries.append(entry)
        return entries
