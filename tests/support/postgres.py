"""A throwaway PostgreSQL cluster for the tests and the benchmark.

`initdb` into a temporary folder (as the `postgres` user when we run as root, since PostgreSQL
refuses to run as root), a free loopback port, fsync off: nothing has to run beforehand, and the
cluster is gone when the session ends. Databases are cheap copies of a migrated template.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from da.queue.postgres import PostgresStore
from tests.support.ports import free_port

T = TypeVar("T")
# Read at import: the tests' autouse fixture clears DA_* variables before each test.
REQUIRE_POSTGRES = os.environ.get("DA_REQUIRE_POSTGRES") == "1"
ADMIN = "da"
TEMPLATE = "da_template"


def find_binaries() -> Path | None:
    """The newest PostgreSQL bin folder: Debian's /usr/lib/postgresql/N/bin, else initdb on PATH."""
    def version(folder: str) -> int:
        match = re.search(r"/(\d+)/bin$", folder)
        return int(match.group(1)) if match else 0

    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def unavailable() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if find_binaries() is None:
        return "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def run_aside(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous fixture code, on a thread so no running event loop is in the way."""
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


class Cluster:
    """One PostgreSQL server in a temporary folder."""

    def __init__(self, *, durable: bool = False, core: int | None = None) -> None:
        """`durable` keeps fsync on (benchmarks); `core` pins the server to one CPU (benchmarks)."""
        binaries = find_binaries()
        assert binaries is not None
        self.bin = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="da-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._copy_strategy = ""
        self._durable = durable
        self._as_user: list[str] = []
        if core is not None and shutil.which("taskset"):
            self._as_user = ["taskset", "-c", str(core)]
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as_user += ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as_user, *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.folder / "server.log"
            raise RuntimeError(f"{' '.join(command)} failed: {result.stdout}{result.stderr}"
                               + (log.read_text() if log.exists() else ""))

    def start(self, *, shared: Path | None = None) -> Cluster:
        """`shared`: a folder the run's test processes share, where the first of them keeps a fresh
        `initdb` for the others to copy (a copy costs a tenth of an initdb's CPU)."""
        if shared is None:
            self._initdb(self.data)
        else:
            self._run("cp", "-a", str(self._fresh_initdb(shared)), str(self.data))
        return self._launch()

    def _initdb(self, data: Path) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", ADMIN, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")

    def _fresh_initdb(self, shared: Path) -> Path:
        """The run's fresh data folder in `shared`, made by whichever process asks first."""
        shared.mkdir(exist_ok=True)
        if self._as_user:
            owner = pwd.getpwnam("postgres")
            os.chown(shared, owner.pw_uid, owner.pw_gid)
        fresh, partial = shared / "data", shared / "partial"
        with (shared / "lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not fresh.exists():
                shutil.rmtree(partial, ignore_errors=True)  # a process killed while making it
                self._initdb(partial)
                partial.rename(fresh)
        return fresh

    def start_standby(self, primary: Cluster) -> Cluster:
        """A streaming standby of `primary`: a base backup that follows it (`pg_basebackup -R`)."""
        self._run(str(self.bin / "pg_basebackup"), "-D", str(self.data), "-R", "-X", "stream", "-h", "127.0.0.1",
                  "-p", str(primary.port), "-U", ADMIN, "--no-sync", "--checkpoint=fast")
        return self._launch()

    def _launch(self) -> Cluster:
        speed = [] if self._durable else ["-c fsync=off", "-c full_page_writes=off"]
        options = " ".join([f"-p {self.port}", f"-k {self.folder}", "-c listen_addresses=127.0.0.1", *speed,
                            "-c max_connections=300", "-c shared_buffers=128MB"])
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        return self

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    async def require_synchronous_standby(self, timeout: float = 30) -> None:
        """From now on every commit waits until a standby has it (`synchronous_commit=on` is the default).

        Set on the running primary rather than at start, since a synchronous primary without its
        standby yet would hold every commit (even the CREATE DATABASE before the base backup); the
        standby's copy of the settings predates it, so once promoted it commits alone.
        """
        await self._admin("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await self._admin("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while await self._fetch_values("SELECT sync_state FROM pg_stat_replication") != ["sync"]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not turn synchronous within {timeout:g} s")
            await asyncio.sleep(0.05)

    def promote(self) -> None:
        """A standby becomes the primary."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                os.kill(self.postmaster_pid(), 0)
            except (OSError, ValueError):
                pass  # killed on purpose (the failover drill); its backends exit on their own
            else:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{ADMIN}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, statement: str) -> None:
        db = await asyncpg.connect(self.url("postgres"))
        try:
            await db.execute(statement)
        finally:
            await db.close()

    async def _fetch_values(self, query: str) -> list[Any]:
        db = await asyncpg.connect(self.url("postgres"))
        try:
            return [row[0] for row in await db.fetch(query)]
        finally:
            await db.close()

    def prepare_template(self) -> None:
        """A database migrated once, copied for each test (faster than migrating each)."""
        async def migrate() -> None:
            await self._admin(f'CREATE DATABASE "{TEMPLATE}"')
            # PostgreSQL 15 copies a database by writing each block to the WAL unless told to copy its
            # files: about 60 ms more CPU a copy here, and a run makes some two hundred.
            if int((await self._fetch_values("SHOW server_version_num"))[0]) >= 150000:
                self._copy_strategy = " STRATEGY FILE_COPY"
            store = PostgresStore(self.url(TEMPLATE))
            await store.open()
            await store.close()

        run_aside(migrate())

    def create_database_now(self) -> str:
        """`create_database` for synchronous fixtures."""
        return run_aside(self.create_database())

    async def create_database(self, *, migrated: bool = True) -> str:
        """A new empty database (a copy of the migrated template unless `migrated` is false); its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        template = f' TEMPLATE "{TEMPLATE}"' if migrated else ""
        await self._admin(f'CREATE DATABASE "{name}"{template}{self._copy_strategy}')
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def need_postgres() -> None:
    """Skip the test where PostgreSQL cannot run (fail it under DA_REQUIRE_POSTGRES=1)."""
    reason = unavailable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"DA_REQUIRE_POSTGRES=1 but {reason}; install the Debian package postgresql.")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
