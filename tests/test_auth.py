"""Who may do what: scoped tokens per route, the admin secret, revocation, and slowing guessers down."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from da.queue import auth, routes
from da.queue.client import QueueClient
from tests.support import loopback
from tests.support.processes import served_routes as routed
from tests.support.server import SECRET, QueueServer
from tests.support.waiting import wait_until
from tests.support.workers import wait_for_status

SAMPLE_ID = "00000000-0000-0000-0000-000000000000"
SAMPLE_TOKEN_ID = "0123456789ab"
pytestmark = pytest.mark.backends("sqlite", "postgres")

# What each kind of credential may do: the README's table, route by route (worker routes further limited to the
# token's own machine). The golden copy: the routes' declarations (queue/routes.py) must derive exactly this, so a
# change of who may call a route shows here as a change to this table.
ADMIN, CLIENT, READER, WORKER = "admin", "client", "reader", "worker"
EVERYONE = {ADMIN, CLIENT, READER, WORKER}
READERS = {ADMIN, CLIENT, READER}
PEOPLE = {ADMIN, CLIENT}
MACHINES = {ADMIN, WORKER}
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/tasks"): PEOPLE,
    ("GET", "/v1/tasks"): READERS,
    ("POST", "/v1/tasks/resolve"): PEOPLE,
    ("GET", "/v1/tasks/{id}"): READERS,
    ("POST", "/v1/tasks/{id}/start"): MACHINES,
    ("POST", "/v1/tasks/{id}/release"): MACHINES,
    ("POST", "/v1/tasks/{id}/heartbeat"): MACHINES,
    ("POST", "/v1/tasks/{id}/report"): MACHINES,
    ("POST", "/v1/tasks/{id}/resolve"): PEOPLE,
    ("POST", "/v1/tasks/{id}/cancel"): PEOPLE,
    ("POST", "/v1/claim"): MACHINES,
    ("POST", "/v1/prune"): {ADMIN},
    ("GET", "/v1/machines"): READERS,
    ("GET", "/v1/events"): READERS,
    ("POST", "/v1/leases/{name}"): PEOPLE,
    ("DELETE", "/v1/leases/{name}"): PEOPLE,
    ("GET", "/metrics"): READERS,
    ("GET", "/openapi.json"): EVERYONE,
    ("GET", "/v1/whoami"): EVERYONE,
    ("GET", "/v1/tokens"): {ADMIN},
    ("POST", "/v1/tokens"): {ADMIN},
    ("POST", "/v1/tokens/{id}/revoke"): {ADMIN},
    ("POST", "/v1/tasks/{id}/asks"): MACHINES,
    ("POST", "/v1/tasks/{id}/asks/{ask_id}"): PEOPLE,
    ("POST", "/v1/tasks/{id}/asks/{ask_id}/wait"): MACHINES,
    ("GET", "/v1/asks"): READERS,
    ("POST", "/v1/tasks/{id}/progress"): MACHINES,
    ("POST", "/v1/tasks/{id}/workspace"): MACHINES,
    ("GET", "/v1/tasks/{id}/progress"): READERS,
    ("POST", "/v1/tasks/{id}/messages"): PEOPLE,
}
# A body each route accepts, so an allowed credential gets past validation.
BODIES = {
    "/v1/tasks": {"type": "lint"},
    "/v1/tasks/resolve": {"from_status": "failed", "status": "done", "dry_run": True},
    "/v1/tasks/{id}/start": {"lease": "ab"},
    "/v1/tasks/{id}/release": {"lease": "ab"},
    "/v1/tasks/{id}/heartbeat": {"lease": "ab"},
    "/v1/tasks/{id}/report": {"lease": "ab", "status": "done"},
    "/v1/tasks/{id}/resolve": {"status": "done"},
    "/v1/tasks/{id}/cancel": {},
    "/v1/claim": {"machine": "box-1", "capabilities": ["lint"]},
    "/v1/prune": {"older_than": 10 * 365 * 86400},
    "/v1/tokens": {"kind": "reader", "name": "walk"},
    "/v1/tasks/{id}/asks": {"lease": "ab", "kind": "permission", "title": "Run it?",
                            "options": [{"id": "allow", "label": "Allow"}]},
    "/v1/tasks/{id}/asks/{ask_id}": {"option": "allow"},
    "/v1/tasks/{id}/asks/{ask_id}/wait": {"lease": "ab"},
    "/v1/tasks/{id}/progress": {"lease": "ab", "progress": {}},
    "/v1/tasks/{id}/workspace": {"workspace": {}},
    "/v1/tasks/{id}/messages": {"text": "also run the tests"},
}


@dataclass
class Tokens:
    """One credential of every kind, against one server."""

    server: QueueServer
    admin: httpx.AsyncClient
    secrets: dict[str, str]

    def client(self, kind: str) -> httpx.AsyncClient:
        return loopback.client(base_url=self.server.url, headers={"x-secret-key": self.secrets[kind]}, timeout=30)


async def create_token(admin: httpx.AsyncClient, **body: object) -> dict:
    response = await admin.post("/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def tokens(server: QueueServer, http: httpx.AsyncClient) -> AsyncIterator[Tokens]:
    secrets = {ADMIN: SECRET}
    secrets[CLIENT] = (await create_token(http, kind="client", name="slack-bot"))["token"]
    secrets[READER] = (await create_token(http, kind="reader", name="prometheus"))["token"]
    secrets[WORKER] = (await create_token(http, kind="worker", machine="box-1", aliases=["box-1.lan"]))["token"]
    yield Tokens(server, http, secrets)


def test_every_route_has_a_rule_and_the_table_is_the_documented_one() -> None:
    assert set(EXPECTED) == routed() - {("GET", "/health")}
    assert {key: set(kinds) for key, kinds in routes.ACCESS.items()} == EXPECTED
    assert {"/health"} == routes.PUBLIC


def test_the_api_document_says_who_may_call_each_route() -> None:
    paths = routes.document("x")["paths"]
    documented = {(method.upper(), path): set(operation["x-da-access"]) for path, operations in paths.items()
                  for method, operation in operations.items() if "x-da-access" in operation}
    assert documented == EXPECTED
    assert paths["/health"]["get"]["security"] == []


@pytest.mark.parametrize("kind", [ADMIN, CLIENT, READER, WORKER])
async def test_each_kind_of_token_may_use_exactly_its_routes(tokens: Tokens, kind: str) -> None:
    async with tokens.client(kind) as caller:
        for method, path in sorted(routed() - {("GET", "/health")}):
            url = path.replace("/v1/tokens/{id}", f"/v1/tokens/{SAMPLE_TOKEN_ID}").replace("{id}", SAMPLE_ID).replace(
            "{name}", "slack:T1").replace("{ask_id}", "1")
            response = await caller.request(method, url, json=BODIES.get(path) if method == "POST" else None)
            if kind in EXPECTED[(method, path)]:
                assert response.status_code not in (401, 403), (kind, method, path, response.text)
            else:
                assert response.status_code == 403, (kind, method, path, response.text)
                assert response.json()["error"] == "forbidden"
                assert f"a {kind} token" in response.json()["detail"]


async def test_tokens_are_stored_hashed_and_never_shown_again(tokens: Tokens) -> None:
    rows = await tokens.server.query("SELECT * FROM tokens")
    stored = repr(rows)
    for kind in (CLIENT, READER, WORKER):
        secret = tokens.secrets[kind]
        assert secret not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() in stored
    listed = (await tokens.admin.get("/v1/tokens")).json()["tokens"]
    assert {(t["kind"], t["name"]) for t in listed} == {("client", "slack-bot"), ("reader", "prometheus"),
                                                         ("worker", "box-1")}
    assert all("token" not in t and "hash" not in t for t in listed)
    assert [t["aliases"] for t in listed if t["kind"] == "worker"] == [["box-1.lan"]]


async def test_whoami_names_the_credential(tokens: Tokens) -> None:
    async with tokens.client(WORKER) as worker:
        me = (await worker.get("/v1/whoami")).json()
    assert me["kind"] == "worker" and me["machine"] == "box-1" and me["aliases"] == ["box-1.lan"]
    assert (await tokens.admin.get("/v1/whoami")).json()["kind"] == "admin"


async def test_a_worker_token_claims_only_as_its_machine_and_its_aliases(tokens: Tokens) -> None:
    await tokens.admin.post("/v1/tasks", json={"type": "lint", "target_machine": "box-2"})
    async with tokens.client(WORKER) as worker:
        other = await worker.post("/v1/claim", json={"machine": "box-2", "capabilities": ["lint"]})
        assert other.status_code == 403
        assert "box-1" in other.json()["detail"] and "box-2" in other.json()["detail"]
        alias = await worker.post("/v1/claim", json={"machine": "box-1", "aliases": ["box-2"],
                                                     "capabilities": ["lint"]})
        assert alias.status_code == 403 and "box-2" in alias.json()["detail"]
        allowed = await worker.post("/v1/claim", json={"machine": "box-1", "aliases": ["box-1.lan"],
                                                       "capabilities": ["lint"]})
        assert allowed.status_code == 204
    assert [row[0] for row in await tokens.server.query("SELECT status FROM tasks")] == ["pending"]


async def test_a_worker_token_cannot_touch_another_machines_task(tokens: Tokens) -> None:
    """Even holding the other machine's lease (leases are not secret enough to be the only check)."""
    created = (await tokens.admin.post("/v1/tasks", json={"type": "lint"})).json()
    claimed = (await tokens.admin.post("/v1/claim", json={"machine": "box-2", "capabilities": ["lint"]})).json()
    lease = claimed["lease"]
    before = await tokens.server.query("SELECT status, lease_expires_at, result FROM tasks")
    async with tokens.client(WORKER) as worker:
        for verb, body in (("start", {"lease": lease}), ("heartbeat", {"lease": lease}),
                           ("report", {"lease": lease, "status": "done"}), ("release", {"lease": lease})):
            response = await worker.post(f"/v1/tasks/{created['id']}/{verb}", json=body)
            assert response.status_code == 403, (verb, response.text)
            assert "box-2" in response.json()["detail"]
    assert await tokens.server.query("SELECT status, lease_expires_at, result FROM tasks") == before


async def test_a_worker_token_reads_nothing_of_a_waiting_task_through_release(tokens: Tokens) -> None:
    created = (await tokens.admin.post("/v1/tasks", json={"type": "lint", "target_machine": "box-2",
                                                          "payload": {"prompt": "rotate the prod password"}})).json()
    async with tokens.client(WORKER) as worker:
        response = await worker.post(f"/v1/tasks/{created['id']}/release", json={"lease": "made-up"})
    assert response.status_code == 409 and "prod password" not in response.text, response.text


async def test_a_worker_token_runs_its_own_task_through(tokens: Tokens) -> None:
    created = (await tokens.admin.post("/v1/tasks", json={"type": "lint", "target_machine": "box-1.lan"})).json()
    async with tokens.client(WORKER) as worker:
        claimed = (await worker.post("/v1/claim", json={"machine": "box-1", "aliases": ["box-1.lan"],
                                                        "capabilities": ["lint"]})).json()
        assert claimed["task"]["id"] == created["id"]
        lease = claimed["lease"]
        path = f"/v1/tasks/{created['id']}"
        assert (await worker.post(f"{path}/start", json={"lease": lease})).status_code == 200
        assert (await worker.post(f"{path}/heartbeat", json={"lease": lease})).status_code == 200
        done = await worker.post(f"{path}/report", json={"lease": lease, "status": "done"})
    assert done.status_code == 200 and done.json()["status"] == "done"


async def test_a_revoked_token_is_refused_at_once(tokens: Tokens) -> None:
    token = await create_token(tokens.admin, kind="client", name="laptop")
    async with loopback.client(base_url=tokens.server.url, headers={"x-secret-key": token["token"]}) as laptop:
        assert (await laptop.get("/v1/tasks")).status_code == 200
        revoked = await tokens.admin.post(f"/v1/tokens/{token['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        refused = await laptop.get("/v1/tasks")
    assert refused.status_code == 401
    listed = {t["id"]: t for t in (await tokens.admin.get("/v1/tokens")).json()["tokens"]}
    assert listed[token["id"]]["revoked_at"]


async def test_a_claim_waiting_when_its_token_is_revoked_gets_no_task(tokens: Tokens) -> None:
    token = await create_token(tokens.admin, kind="worker", name="laptop", machine="laptop")
    async with loopback.client(base_url=tokens.server.url, headers={"x-secret-key": token["token"]},
                                 timeout=30) as laptop:
        parked = asyncio.ensure_future(laptop.post("/v1/claim", json={"machine": "laptop", "capabilities": ["lint"],
                                                                       "wait": 20}))

        async def seen() -> bool:
            machines = (await tokens.admin.get("/v1/machines")).json()["machines"]
            return any(m["name"] == "laptop" for m in machines)

        await wait_until(seen)
        await tokens.admin.post(f"/v1/tokens/{token['id']}/revoke")
        created = (await tokens.admin.post("/v1/tasks", json={"type": "lint"})).json()
        answer = await asyncio.wait_for(parked, 20)
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"], answer.text
    assert (await tokens.admin.get(f"/v1/tasks/{created['id']}")).json()["status"] == "pending"


@pytest.mark.backends("postgres")
async def test_a_token_revoked_on_one_replica_is_refused_by_the_other_at_once(make_server, backend) -> None:
    first = await make_server()
    second = await make_server(db_url=first.settings.db_url)
    async with loopback.client(base_url=first.url, headers={"x-secret-key": SECRET}) as admin_a:
        token = await create_token(admin_a, kind="client", name="laptop")
        async with loopback.client(base_url=second.url, headers={"x-secret-key": token["token"]}) as on_b:
            for _ in range(3):
                assert (await on_b.get("/v1/tasks")).status_code == 200
            assert (await admin_a.post(f"/v1/tokens/{token['id']}/revoke")).status_code == 200
            assert (await on_b.get("/v1/tasks")).status_code == 401


async def test_token_requests_that_are_wrong_get_one_sentence_and_change_nothing(tokens: Tokens) -> None:
    before = await tokens.server.query("SELECT id, name, revoked_at FROM tokens ORDER BY id")
    for body, message in (({"kind": "root", "name": "x"}, "'kind' must be one of client, reader, worker"),
                          ({"kind": "worker"}, "'machine' is required for a worker token"),
                          ({"kind": "client"}, "'name' is required"),
                          ({"kind": "client", "name": "x", "machine": "box-1"}, "only a worker token"),
                          ({"kind": "client", "name": "slack-bot"}, "already an active token named 'slack-bot'"),
                          ({"kind": "worker", "machine": "a b"}, "may hold only")):
        response = await tokens.admin.post("/v1/tokens", json=body)
        assert response.status_code in (400, 409), response.text
        assert message in response.json()["detail"], response.text
    missing = await tokens.admin.post(f"/v1/tokens/{SAMPLE_TOKEN_ID}/revoke")
    assert missing.status_code == 404 and "da token list" in missing.json()["detail"]
    assert await tokens.server.query("SELECT id, name, revoked_at FROM tokens ORDER BY id") == before


# ---- slowing guessers down ---------------------------------------------------------------


async def test_guesses_from_the_workers_address_never_refuse_its_valid_requests(make_server, tmp_path,
                                                                                make_worker) -> None:
    """The old lockout: 20 wrong secrets from an address refused the real worker there for a minute,
    so its heartbeats failed and its running task was killed."""
    # A task that outlives its lease by a second: refused heartbeats lose it; a busy machine's pause does not.
    server = await make_server(lease=3.0)
    worker = make_worker(server.url, tmp_path)
    async with QueueClient(server.url, SECRET) as client, \
            loopback.client(base_url=server.url, timeout=60) as guesser:
        task = await client.create_task("run_script", {"script": "sleep 4; echo survived"})
        await wait_for_status(client, task.id, ("in_progress",))
        answers = await asyncio.gather(*[guesser.get("/v1/tasks", headers={"x-secret-key": f"guess-{n}"})
                                         for n in range(40)])
        finished = await wait_for_status(client, task.id)
    assert {response.status_code for response in answers} <= {401, 429}  # 429: refused unchecked
    assert finished.status == "done" and "survived" in finished.result["stdout"]
    assert "lost" not in worker.log and "refused" not in worker.log


async def test_guesses_beyond_the_free_ones_are_answered_slowly_and_a_valid_request_does_not_reset_that(
        server: QueueServer, caplog: pytest.LogCaptureFixture) -> None:
    """The old bypass: one valid request every 19 guesses cleared the count."""
    caplog.set_level(logging.INFO)
    async with loopback.client(base_url=server.url, timeout=60) as guesser:
        for n in range(auth.FREE_GUESSES):
            assert (await guesser.get("/v1/tasks", headers={"x-secret-key": f"guess-{n}"})).status_code == 401
        assert (await guesser.get("/v1/tasks", headers={"x-secret-key": SECRET})).status_code == 200
        started = time.monotonic()
        slowed = await guesser.get("/v1/tasks", headers={"x-secret-key": "one-more-guess"})
        elapsed = time.monotonic() - started
    assert slowed.status_code == 401
    assert elapsed >= auth.FIRST_DELAY
    assert "answered after" in caplog.text
    assert "guess-" not in caplog.text and SECRET not in caplog.text


async def test_the_same_wrong_secret_repeated_is_one_failure(server: QueueServer) -> None:
    """A stale secret in a worker's .env is not a guesser: it is never slowed down."""
    async with loopback.client(base_url=server.url, headers={"x-secret-key": "stale-secret"}) as stale:
        started = time.monotonic()
        for _ in range(3 * auth.FREE_GUESSES):
            assert (await stale.get("/v1/tasks")).status_code == 401
    assert time.monotonic() - started < 3 * auth.FREE_GUESSES * auth.FIRST_DELAY


def test_wrong_answers_slow_down_one_after_another_and_never_wait_half_a_lease() -> None:
    now = [0.0]
    throttle = auth.Throttle(lease=8.0, clock=lambda: now[0])

    def guess(address: str, text: str) -> float | None:
        wait = throttle.turn(address, auth.fingerprint(text.encode()))
        if wait is not None:
            throttle.failed(address, auth.fingerprint(text.encode()))
        return wait

    sequential: list[float] = []
    for n in range(20):
        sequential.append(guess("10.0.0.5", f"guess-{n}") or 0.0)
        now[0] += sequential[-1]
    free = auth.FREE_GUESSES
    assert sequential[:free] == [0.0] * free
    assert sequential[free:free + 4] == [0.25, 0.5, 1.0, 2.0] and max(sequential) == 2.0  # a quarter of the lease
    # Guesses sent in parallel queue up behind each other; past half the lease they are refused unchecked.
    parallel = [throttle.turn("10.0.0.5", auth.fingerprint(f"parallel-{n}".encode())) for n in range(10)]
    assert parallel == [2.0, 4.0] + [None] * 8
    assert guess("10.0.0.6", "guess") == 0.0  # another address is not affected
    assert guess("fd00::1", "x") == 0.0 and auth.address_key("fd00::1") == auth.address_key("fd00::2")
    now[0] += auth.WINDOW + 1
    assert guess("10.0.0.5", "after-a-quiet-minute") == 0.0


async def test_a_secret_header_that_is_not_utf8_is_401_and_counted(server: QueueServer) -> None:
    async with loopback.client(base_url=server.url, timeout=60) as guesser:
        for n in range(auth.FREE_GUESSES):
            response = await guesser.get("/v1/tasks", headers={"x-secret-key": b"\xff\xfe" + bytes([0x80 + n])})  # type: ignore[arg-type]
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "unauthorized"
        started = time.monotonic()
        slowed = await guesser.get("/v1/tasks", headers={"x-secret-key": b"\xc3\x28"})  # type: ignore[arg-type]
    assert slowed.status_code == 401 and time.monotonic() - started >= auth.FIRST_DELAY


async def test_refusals_are_logged_without_what_was_sent(server: QueueServer, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with loopback.client(base_url=server.url) as anonymous:
        await anonymous.get("/v1/tasks", headers={"x-secret-key": "guess-zz"})
    await wait_until(lambda: asyncio.sleep(0, "refused GET /v1/tasks from 127.0.0.1" in caplog.text))
    assert "guess-zz" not in caplog.text
