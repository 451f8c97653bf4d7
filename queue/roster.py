"""Which machines are alive: the declared fleet merged with who polled or heartbeated lately.

Each replica notes sightings in memory as requests arrive (a claim must not pay for a write) and
hands the store what changed every `SHARE_INTERVAL` seconds in one statement; the roster it shows
merges its own sightings with those every replica shared. On SQLite there is one replica, and the
store keeps nothing: liveness is rebuilt within one poll interval after a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from da.fleet import Fleet
from da.queue.models import iso
from da.queue.store import MachineCounts, Sighting, Store

# A worker's long-poll lasts at most 60 s and it is marked seen at both ends, so a live
# worker is never silent longer than this.
ONLINE_WINDOW = 75.0
# How often a replica shares what it saw: small beside the online window, and one statement
# per interval whatever the number of workers.
SHARE_INTERVAL = 2.0


@dataclass
class Roster:
    """The fleet's liveness, keyed by canonical machine name."""

    fleet: Fleet
    clock: Callable[[], float] = time.time
    sightings: dict[str, Sighting] = field(default_factory=dict)
    unshared: set[str] = field(default_factory=set)

    def seen(self, name: str, capabilities: tuple[str, ...] = (), agents: tuple[str, ...] = ()) -> None:
        """Record that `name` (or one of its aliases) is alive."""
        canonical = self.fleet.canonical(name)
        previous = self.sightings.get(canonical)
        if previous and not capabilities:
            capabilities, agents = previous.capabilities, previous.agents
        self.sightings[canonical] = Sighting(canonical, self.clock(), capabilities, agents)
        self.unshared.add(canonical)

    def forget(self, name: str) -> None:
        """The machine's worker lost its credential: offline here now, until it polls again with a good one."""
        canonical = self.fleet.canonical(name)
        self.sightings.pop(canonical, None)
        self.unshared.discard(canonical)

    async def share(self, store: Store) -> None:
        """Hand the store the sightings it has not had yet."""
        if not self.unshared:
            return
        names, self.unshared = self.unshared, set()
        try:
            await store.record_sightings([self.sightings[name] for name in sorted(names)])
        except Exception:
            self.unshared |= names
            raise

    def merged(self, shared: Iterable[Sighting]) -> dict[str, Sighting]:
        """This replica's sightings with the shared ones; the later of two wins."""
        merged = dict(self.sightings)
        for sighting in shared:
            name = self.fleet.canonical(sighting.name)
            mine = merged.get(name)
            if mine is None or sighting.at > mine.at:
                keep = sighting if sighting.capabilities or mine is None else Sighting(
                    name, sighting.at, mine.capabilities, mine.agents)
                merged[name] = keep
        return merged

    def online(self, shared: Iterable[Sighting] = ()) -> list[str]:
        now = self.clock()
        return sorted(name for name, s in self.merged(shared).items() if now - s.at <= ONLINE_WINDOW)

    def snapshot(self, counts: dict[str, MachineCounts], shared: Iterable[Sighting] = ()) -> list[dict[str, Any]]:
        """Every declared machine, plus any undeclared one that polled, with liveness and counts."""
        now = self.clock()
        sightings = self.merged(shared)
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
        for name in sorted(set(sightings) - declared):
            machines.append({"name": name, "role": "worker", "os": "", "tailscale_ip": "",
                             "capabilities": list(sightings[name].capabilities),
                             "agents": list(sightings[name].agents), "aliases": [], "declared": False})
        for entry in machines:
            seen = sightings.get(entry["name"])
            count = merged.get(entry["name"], MachineCounts())
            entry.setdefault("declared", True)
            entry.update(
                # What its worker said it runs when it last polled: routing goes by it while it is online.
                offered={"capabilities": list(seen.capabilities), "agents": list(seen.agents)}
                if seen and seen.capabilities else None,
                online=bool(seen and now - seen.at <= ONLINE_WINDOW),
                last_seen=iso(seen.at) if seen else None,
                active=count.active,
                done=count.done,
                failed=count.failed,
                top_agent=count.top_agent,
            )
            entries.append(entry)
        return entries
