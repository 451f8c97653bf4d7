"""schemathesis against /openapi.json: no 5xx, and every answer matches the document, on both backends.

The schema is loaded lazily (from a fixture), so its boundary cases are generated once, where the test
runs, and not at collection in every test process; each generated case goes to both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import ignored_auth

from da.queue import routes
from da.version import __version__
from tests.support.processes import launch_serve, wait_serving
from tests.support.server import SECRET


@pytest.fixture(scope="module")
def queue_document() -> Any:
    return schemathesis.openapi.from_dict(routes.document(__version__))


schema = schemathesis.pytest.from_fixture("queue_document")


@pytest.fixture(autouse=True)
def node_id_for_lazy_schemas(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy schemas read `Node._nodeid`, which pytest 9.2 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def live_queues(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: Any
                ) -> Iterator[list[tuple[str, requests.Session]]]:
    """A real `da serve` on SQLite and one on PostgreSQL for the whole module, each with a kept-alive session."""
    backends = {"sqlite": {}, "postgres": {"QUEUE_DB_URL": postgres_cluster.create_database_now()}}
    started = [launch_serve(tmp_path_factory.mktemp(f"fuzz-{name}"), SECRET_KEY=SECRET, LOG_LEVEL="ERROR", **database)
               for name, database in backends.items()]
    try:
        for _, url, log in started:
            wait_serving(url, log)
        with requests.Session() as sqlite, requests.Session() as postgres:
            for session in (sqlite, postgres):
                # Loopback needs no proxy or .netrc: looking them up in the environment for each of 5,700
                # requests was an eighth of the test's CPU.
                session.trust_env = False
            yield [(started[0][1], sqlite), (started[1][1], postgres)]
    finally:
        for process, _, _ in started:
            process.terminate()
            process.wait(10)


# Two tests, so the operations' cases run in two test processes at once.
TASK_ROUTES = r"^/v1/tasks/\{id\}"
# Derandomized: CI sees the same examples every run, so a failure is a regression, not luck.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.long
@schema.include(path_regex=TASK_ROUTES).parametrize()
@FUZZ
def test_the_task_routes_match_the_document(case: Any, live_queues: list[tuple[str, requests.Session]]) -> None:
    call_both(case, live_queues)


@pytest.mark.long
@schema.exclude(path_regex=TASK_ROUTES).parametrize()
@FUZZ
def test_the_other_routes_match_the_document(case: Any, live_queues: list[tuple[str, requests.Session]]) -> None:
    call_both(case, live_queues)


def call_both(case: Any, live_queues: list[tuple[str, requests.Session]]) -> None:
    """No 5xx and an answer the document allows, from each backend."""
    body = case.body if isinstance(case.body, dict) else {}
    wait = body.get("wait")
    if case.path == "/v1/claim" and isinstance(wait, (int, float)) and 0 < wait <= 60:
        body["wait"] = 0  # a long-poll per example would only make the run slow
    query = case.query if isinstance(case.query, dict) else {}
    if case.path == "/v1/events" and str(query.get("wait", "")).replace(".", "", 1).isdigit():
        query["wait"] = 0
    # Refusing a call without credentials is test_queue_http's, route by route: probing it again per case
    # would double the requests.
    for url, session in live_queues:
        case.call_and_validate(base_url=url, session=session, headers={"x-secret-key": SECRET},
                               excluded_checks=[ignored_auth])
