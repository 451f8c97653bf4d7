"""`da token` and the machines that hold tokens: a worker's .env has only its own, and a task that
steals it can do nothing but this machine's work."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from da import config
from da.bot.settings import ClientSettings
from da.bot.slack.settings import BotSettings
from da.config import ConfigError
from da.queue.client import QueueClient
from da.worker.redact import Redactor
from da.worker.settings import WorkerSettings
from tests.support import loopback
from tests.support.processes import run_da
from tests.support.server import SECRET, QueueServer
from tests.support.workers import WorkerProcess, run_task


def token_from(out: str) -> str:
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("DA_TOKEN="))


async def test_da_token_creates_lists_and_revokes_through_the_api(server: QueueServer, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text(
        "machines:\n  mac-mini:\n    capabilities: [run_script]\n    aliases: [mm, studio]\n")
    admin = {"SECRET_KEY": SECRET, "QUEUE_URL": server.url}
    code, out = await run_da("token", "create", "worker", "mac-mini", cwd=tmp_path, **admin)
    assert code == 0, out
    assert "created worker token" in out and "for mac-mini (aliases mm, studio)" in out and "shown only now" in out
    worker_token = token_from(out)
    assert worker_token.startswith("daw_") and len(worker_token) == 47
    code, out = await run_da("token", "create", "client", "slack-bot", cwd=tmp_path, **admin)
    assert code == 0 and token_from(out).startswith("dac_")
    code, out = await run_da("token", "list", cwd=tmp_path, **admin)
    assert code == 0 and worker_token not in out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "KIND", "NAME", "MACHINE", "ALIASES", "CREATED", "REVOKED"]
    assert [line.split()[1:5] for line in lines[1:]] == [["worker", "mac-mini", "mac-mini", "mm,studio"],
                                                         ["client", "slack-bot", "-", "-"]]
    code, out = await run_da("token", "revoke", "mac-mini", cwd=tmp_path, **admin)
    assert code == 0 and "revoked worker token" in out and "every replica refuses it" in out
    async with loopback.client(base_url=server.url, headers={"x-secret-key": worker_token}) as stolen:
        assert (await stolen.post("/v1/claim", json={"machine": "mac-mini", "capabilities": ["x"]})).status_code == 401
    code, out = await run_da("token", "list", "--json", cwd=tmp_path, **admin)
    assert [t["name"] for t in json.loads(out)] == ["slack-bot"]
    code, out = await run_da("token", "list", "--all", "--json", cwd=tmp_path, **admin)
    assert [t["revoked_at"] is not None for t in json.loads(out)] == [True, False]


async def test_da_token_refuses_without_the_admin_secret_or_with_bad_input(server: QueueServer,
                                                                           tmp_path: Path) -> None:
    code, out = await run_da("token", "list", cwd=tmp_path, DA_TOKEN="dac_" + "x" * 43, QUEUE_URL=server.url)
    assert code == 2 and "SECRET_KEY is not set; `da token` needs the admin secret" in out
    admin = {"SECRET_KEY": SECRET, "QUEUE_URL": server.url}
    code, out = await run_da("token", "revoke", "nobody", cwd=tmp_path, **admin)
    assert code == 1 and out.strip() == ("da: no token with the id or active name 'nobody'; `da token list --all` "
                                         "shows them.")
    code, out = await run_da("token", "create", "client", "laptop", "--aliases=x", cwd=tmp_path, **admin)
    assert code == 2 and "--aliases and --name are for worker tokens" in out
    code, out = await run_da("token", "create", "worker", "bad name", cwd=tmp_path, **admin)
    assert code == 1 and "'machine' may hold only letters" in out
    code, out = await run_da("token", "list", cwd=tmp_path, SECRET_KEY="wrong", QUEUE_URL=server.url)
    assert code == 1 and "Missing, wrong or revoked credential" in out


async def test_a_worker_holding_only_its_token_runs_tasks_and_a_task_cannot_escalate_with_it(
        server: QueueServer, client: QueueClient, tmp_path: Path) -> None:
    """The defect: any task could read the shared secret from its worker's .env and create, resolve or
    cancel anything with it. Now the .env holds a worker token, good for this machine's work only."""
    _, secret = await client.create_token("worker", machine="test-box")
    home = tmp_path / "box"
    home.mkdir()
    (home / ".env").write_text(f"DA_TOKEN={secret}\n")
    victim = await client.create_task("lint", {}, target_machine="elsewhere")
    steal = (
        "import json, re, urllib.request, urllib.error\n"
        "token = re.search(r'DA_TOKEN=(\\S+)', open('.env').read()).group(1)\n"
        "def call(path, body):\n"
        "    request = urllib.request.Request(URL + path, json.dumps(body).encode(), method='POST',\n"
        "                                     headers={'x-secret-key': token, 'content-type': 'application/json'})\n"
        "    try:\n"
        "        return urllib.request.urlopen(request).status\n"
        "    except urllib.error.HTTPError as exc:\n"
        "        return exc.code\n"
        "print('create', call('/v1/tasks', {'type': 'run_script', 'payload': {'script': 'id'}}))\n"
        "print('cancel', call('/v1/tasks/" + victim.id + "/cancel', {}))\n"
        "print('claim', call('/v1/claim', {'machine': 'elsewhere', 'capabilities': ['lint']}))\n"
        "print('prune', call('/v1/prune', {'older_than': 0}))\n"
    ).replace("URL", repr(server.url))
    (home / "steal.py").write_text(steal)
    worker = WorkerProcess(server.url, home)
    worker.env.pop("SECRET_KEY")
    worker.start()
    try:
        task = await run_task(client, "run_script", {"script": f"{sys.executable} steal.py", "cwd": str(home)})
    finally:
        worker.kill()
    assert task.status == "done", task.result
    assert task.result["stdout"].split() == ["create", "403", "cancel", "403", "claim", "403", "prune", "403"]
    assert (await client.get_task(victim.id)).status == "pending"
    assert [t.type for t in (await client.list_tasks())[0]] == ["run_script", "lint"]


async def test_a_task_printing_the_workers_token_encoded_or_reversed_is_redacted(server: QueueServer,
                                                                                 client: QueueClient,
                                                                                 tmp_path: Path) -> None:
    _, secret = await client.create_token("worker", machine="test-box")
    # A task finds the token where it can: the worker's .env, its environment, its memory.
    (tmp_path / "found.txt").write_text(secret)
    worker = WorkerProcess(server.url, tmp_path, DA_TOKEN=secret)
    worker.env.pop("SECRET_KEY")
    worker.start()
    leak = (f"{sys.executable} -c \"import base64; t = open('{tmp_path / 'found.txt'}', 'rb').read(); "
            "print(base64.b64encode(t).decode()); print(base64.b64encode(b'x' + t).decode()); "
            "print(base64.urlsafe_b64encode(b'xy' + t).decode()); print(t[::-1].decode()); print(t.decode())\"")
    try:
        task = await run_task(client, "run_script", {"script": leak})
    finally:
        worker.kill()
    assert task.status == "done", task.result
    printed = task.result["stdout"].splitlines()
    assert len(printed) == 5 and all("[redacted]" in line for line in printed), printed
    raw = secret.encode()
    for copy in (secret, secret[::-1], base64.b64encode(raw).decode()[:40], base64.b64encode(b"x" + raw).decode()[4:44],
                 base64.urlsafe_b64encode(b"xy" + raw).decode()[4:44]):
        assert copy not in task.result["stdout"]
        assert copy not in Path(task.result["log_path"]).read_text()


def test_redaction_finds_the_credential_reversed_and_in_base64_at_any_offset() -> None:
    token = "daw_" + "Q3ViZSBvZiBjaGVlc2UgaW4gYSBsaWdodCByYWluIQ-_xy"[:43]
    redact = Redactor.from_env({"DA_TOKEN": token, "OTHER_API_KEY": "plain-only-secret"})
    for prefix in (b"", b"a", b"ab", b"abc"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(prefix + token.encode() + b"tail").decode()
            assert "[redacted]" in redact(text) and len(redact(text)) < len(text) - 40, (prefix, text)
    assert redact(f"x{token[::-1]}y") == "x[redacted]y"
    # Other secrets only as they are: disguises cost scanning time on every byte of output.
    assert redact("plain-only-secret") == "[redacted]"
    assert redact(base64.b64encode(b"plain-only-secret").decode()) == base64.b64encode(b"plain-only-secret").decode()


def test_redaction_finds_queue_credentials_in_the_forms_the_docs_show_them_in() -> None:
    """Credentials this worker does not hold (another machine's token, the queue host's .env) are
    unknown values; they are found by their shape and by the names they are written under."""
    redact = Redactor.from_env({"DA_TOKEN": "daw_" + "a" * 43})
    other = "dac_" + "B-9_" * 10 + "xyz"
    shown = {
        f"copied {other} from the wiki": "copied [redacted] from the wiki",
        "SECRET_KEY=the-admins-secret\nQUEUE_PORT=8000": "SECRET_KEY=[redacted]\nQUEUE_PORT=8000",
        "export DA_TOKEN='daw_whatever_it_is'": "export DA_TOKEN='[redacted]'",
        '{"SECRET_KEY": "from-a-json-dump"}': '{"SECRET_KEY": "[redacted]"}',
        "> X-Secret-Key: hunter2hunter2\r\n": "> X-Secret-Key: [redacted]\r\n",
        "curl -H 'Authorization: Bearer abc.def-ghi' http://q": "curl -H 'Authorization: Bearer [redacted]' http://q",
    }
    for text, expected in shown.items():
        assert redact(text) == expected, text
    for ordinary in ("SECRET_KEY=$SECRET_KEY", "da: SECRET_KEY is not set", "the bearer of bad news",
                     "x-secret-key: $SECRET_KEY", "DA_TOKEN=short", "da_x_" + "a" * 43):
        assert redact(ordinary) == ordinary
    # A long line is redacted piece by piece; a split never falls inside a value.
    line = "y" * 3000 + " SECRET_KEY=" + "v" * 900 + " " + "z" * 300
    cut = redact.safe_end(line)
    assert cut == line.index(" z")  # the plain split would fall inside the value; it moves to its end
    assert redact(line[:cut]) + redact(line[cut:]) == redact(line) == "y" * 3000 + " SECRET_KEY=[redacted] " + "z" * 300
    assert Redactor(["plain-value"])("SECRET_KEY=other-value") == "SECRET_KEY=other-value"  # forms: workers only


def test_every_front_end_and_the_worker_take_DA_TOKEN_before_SECRET_KEY(tmp_path: Path) -> None:
    env = {"DA_TOKEN": "dac_token", "SECRET_KEY": "admin", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1",
           "MACHINE_NAME": "box", "WORKER_CAPABILITIES": "lint", "DA_CONFIG_DIR": str(tmp_path)}
    assert ClientSettings.from_env(env).secret == "dac_token"
    assert BotSettings.from_env(env).secret == "dac_token"
    worker = WorkerSettings.from_env(env)
    assert worker.secret == "dac_token" and "DA_TOKEN" not in worker.process_env
    assert WorkerSettings.from_env({**env, "DA_TOKEN": ""}).secret == "admin"
    with pytest.raises(ConfigError, match=r"DA_TOKEN is not set; put this machine's worker token in .env \(make one "
                                          r"on the queue host with `da token create worker \$MACHINE_NAME`\)"):
        config.credential({}, "worker")
    with pytest.raises(ConfigError, match="client token"):
        ClientSettings.from_env({})


async def test_prune_and_doctor_on_a_machine_that_holds_a_token(server: QueueServer, client: QueueClient,
                                                                tmp_path: Path) -> None:
    _, worker_token = await client.create_token("worker", machine="box")
    _, client_token = await client.create_token("client", name="laptop")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "machines.yaml").write_text("machines:\n  box:\n    capabilities: [lint]\n")
    code, out = await run_da("prune", cwd=tmp_path, DA_TOKEN=worker_token, QUEUE_URL=server.url,
                             DA_LOG_DIR=str(tmp_path / "logs"))
    assert code == 0 and "removed 0 task log file(s)" in out and "run `da prune` on the queue host" in out
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    code, out = await run_da("doctor", cwd=tmp_path, DA_TOKEN=worker_token, QUEUE_URL=server.url,
                             MACHINE_NAME="box", PATH=path)
    assert "ok   credential: DA_TOKEN set" in out and "ok   secret: accepted (worker token 'box')" in out, out
    assert "ok   worker token: claims as box" in out, out
    code, out = await run_da("doctor", cwd=tmp_path, DA_TOKEN=worker_token, QUEUE_URL=server.url,
                             MACHINE_NAME="box", WORKER_ALIASES="box.lan", PATH=path)
    assert code == 1 and "FAIL worker token: the token does not allow alias(es) box.lan, so every claim would be " \
        "refused" in out and "--aliases=box.lan" in out, out
    code, out = await run_da("doctor", cwd=tmp_path, DA_TOKEN=client_token, QUEUE_URL=server.url,
                             MACHINE_NAME="box", PATH=path)
    assert code == 1 and "FAIL worker token: a client token cannot claim tasks" in out
    assert "da token create worker box" in out
