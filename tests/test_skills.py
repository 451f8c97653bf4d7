"""Skills over real SSH (an asyncssh server on loopback), and the edits to machines.yaml."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import yaml

from da import fleet as fleet_module
from da.bot import views
from da.bot.grammar import parse
from da.bot.terminal.skills import SkillsService, SshOptions, add_capability
from da.fleet import Fleet, Machine
from da.queue.client import QueueClient
from tests.support.server import SECRET
from tests.support.terminal import da
from tests.support.workers import run_task

REGISTRY = """skills:
  shell:
    category: infrastructure
    description: a POSIX shell
    check: command -v sh
    install: {linux: "true"}
  widget:
    category: backend
    description: the widget tool
    check: command -v no-such-widget-xyz
    install:
      linux: echo fetching widget; echo installing widget
"""


@dataclass
class SshServer:
    port: int
    known_hosts: Path
    client_key: Path
    other_known_hosts: Path


async def handle(process: asyncssh.SSHServerProcess) -> None:
    """Run the command like sshd would: through a shell, streaming its output."""
    child = await asyncio.create_subprocess_shell(process.command or "true", stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.STDOUT)
    assert child.stdout is not None
    async for line in child.stdout:
        process.stdout.write(line.decode())
    process.exit(await child.wait())


@pytest.fixture
async def ssh_server(tmp_path: Path) -> AsyncIterator[SshServer]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_bytes(client_key.export_public_key())
    key_file = tmp_path / "id_ed25519"
    client_key.write_private_key(str(key_file))
    server = await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=str(authorized),
                                   process_factory=handle)
    port = server.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    other = tmp_path / "other_known_hosts"
    other.write_text(f"[127.0.0.1]:{port} {stranger.export_public_key().decode()}")
    yield SshServer(port, known, key_file, other)
    server.close()
    await server.wait_closed()


def machine(port: int, name: str = "box", os_name: str = "linux") -> Machine:
    return Machine(name, capabilities=("run_script",), os=os_name, tailscale_ip="127.0.0.1", user=getpass.getuser(),
                       ssh_port=port)


def service(tmp_path: Path, ssh: SshServer, known_hosts: Path | None = None) -> SkillsService:
    registry = tmp_path / "skills.yaml"
    registry.write_text(REGISTRY)
    return SkillsService(registry, tmp_path / "machines.yaml", tmp_path / "handlers",
                         SshOptions(str(known_hosts or ssh.known_hosts), (str(ssh.client_key),), timeout=5))


async def test_available_checks_each_machine_over_ssh(tmp_path: Path, ssh_server: SshServer) -> None:
    fleet = Fleet((machine(ssh_server.port), machine(9, "asleep")))
    view = await service(tmp_path, ssh_server).run(parse("skills available"), fleet)
    assert isinstance(view, views.SkillsAvailable)
    table = {row.name: row.installed for row in view.rows}
    assert table["shell"] == {"box": "installed", "asleep": "unreachable"}
    assert table["widget"] == {"box": "missing", "asleep": "unreachable"}


async def test_a_changed_host_key_is_refused(tmp_path: Path, ssh_server: SshServer) -> None:
    skills = service(tmp_path, ssh_server, known_hosts=ssh_server.other_known_hosts)
    view = await skills.run(parse("skills list box"), Fleet((machine(ssh_server.port),)))
    assert {row.installed["box"] for row in view.rows} == {"host key mismatch"}


async def test_install_streams_the_recipe_output(tmp_path: Path, ssh_server: SshServer) -> None:
    lines: list[str] = []
    view = await service(tmp_path, ssh_server).run(parse("skills install box widget"),
                                                   Fleet((machine(ssh_server.port),)), emit=lines.append)
    assert view == views.Message("installed widget on box.")
    assert lines == ["$ echo fetching widget; echo installing widget   # on box", "fetching widget",
                     "installing widget"]


async def test_install_refuses_a_skill_without_a_recipe_for_the_os(tmp_path: Path, ssh_server: SshServer) -> None:
    view = await service(tmp_path, ssh_server).run(parse("skills install mac widget"),
                                                   Fleet((machine(ssh_server.port, "mac", "macos"),)))
    assert view == views.Message("widget has no install recipe for macos (mac); it has recipes for linux.", ok=False)


MACHINES = """# our fleet
machines:
  mac-mini:   # the desk one
    os: macos
    capabilities: [ios_build, agent_run]  # keep sorted-ish
    agents: [claude]

  thinkpad:
    os: linux
    capabilities:
      - android_build
      - lint
    agents: [gemini]
  bare:
    os: linux
"""


@pytest.mark.parametrize(("name", "expected"), [
    ("mac-mini", "    capabilities: [ios_build, agent_run, docker]  # keep sorted-ish\n"),
    ("thinkpad", "      - lint\n      - docker\n"),
    ("bare", "  bare:\n    capabilities: [docker]\n    os: linux\n"),
])
def test_add_capability_keeps_comments_and_order(name: str, expected: str) -> None:
    edited = add_capability(MACHINES, name, "docker")
    assert expected in edited
    assert edited.replace(expected, "") == MACHINES.replace(expected.replace(", docker", "").replace(
        "      - docker\n", "").replace("    capabilities: [docker]\n", ""), "")
    parsed = fleet_module.parse_fleet(yaml.safe_load(edited), "x")
    assert "docker" in parsed.find(name).capabilities  # type: ignore[union-attr]
    others = [m for m in parsed.machines if m.name != name]
    assert all("docker" not in m.capabilities for m in others)


async def test_skills_add_writes_the_file(tmp_path: Path, ssh_server: SshServer) -> None:
    skills = service(tmp_path, ssh_server)
    (tmp_path / "machines.yaml").write_text(MACHINES)
    fleet = Fleet((Machine("thinkpad"),))
    view = await skills.run(parse("skills add thinkpad docker"), fleet)
    assert view.text == "added docker to thinkpad; restart its worker to take it."
    assert "      - docker\n" in (tmp_path / "machines.yaml").read_text()
    again = await skills.run(parse("skills add thinkpad docker"), fleet)
    assert again.text == "thinkpad already has docker."


def answers(*values: str):
    queue = list(values)

    async def ask(question: str) -> str:
        return queue.pop(0)

    return ask


async def test_create_writes_a_handler_a_real_worker_runs(tmp_path: Path, ssh_server: SshServer,
                                                          make_server, make_worker) -> None:
    skills = service(tmp_path, ssh_server)
    view = await skills.run(parse("skills create hello_tool"), Fleet(()),
                            ask=answers("says hello", "backend", "echo hello from the skill", "", "", ""))
    assert view.ok and "created skill hello_tool" in view.text
    assert "hello_tool" in yaml.safe_load((tmp_path / "skills.yaml").read_text())["skills"]
    assert (tmp_path / "skills.yaml").read_text().startswith(REGISTRY)
    duplicate = await skills.run(parse("skills create hello_tool"), Fleet(()), ask=answers())
    assert not duplicate.ok and "already exists" in duplicate.text
    evil = await skills.run(parse("skills create ../../etc/evil"), Fleet(()), ask=answers())
    assert not evil.ok and "is not a skill name" in evil.text
    server = await make_server()
    make_worker(server.url, tmp_path, DA_HANDLERS_PATH=str(tmp_path / "handlers"),
                WORKER_CAPABILITIES="hello_tool")
    async with QueueClient(server.url, SECRET) as client:
        task = await run_task(client, "hello_tool", {})
    assert task.status == "done", task.notes
    assert task.result["stdout"] == "hello from the skill\n"


async def test_skills_available_from_the_terminal(tmp_path: Path, ssh_server: SshServer, make_server) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "skills.yaml").write_text(REGISTRY)
    server = await make_server(fleet=fleet_module.parse_fleet({"machines": {"box": {
        "os": "linux", "tailscale_ip": "127.0.0.1", "ssh_port": ssh_server.port, "user": getpass.getuser(),
        "capabilities": ["run_script"]}}}, "test"))
    run = await da(server.url, "skills", "available", cwd=tmp_path, DA_CONFIG_DIR=str(config),
                   DA_SSH_KNOWN_HOSTS=str(ssh_server.known_hosts), DA_SSH_KEY=str(ssh_server.client_key))
    assert run.code == 0, run.out + run.err
    lines = run.out.splitlines()
    assert lines[0].split()[:3] == ["SKILL", "CATEGORY", "box"]
    assert lines[1].split()[:3] == ["shell", "infrastructure", "installed"]
    assert lines[2].split()[:3] == ["widget", "backend", "missing"]
