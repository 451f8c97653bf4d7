"""A task's own git worktree and branch: made before an agent runs, committed and summarised after,
pushed and offered as a pull/merge request on request, listed and pruned later.

Every git, gh and glab call is argv (never a shell). The user's checkout is only read: its branch,
index, stash and untracked files are never touched; the work lives in a worktree under
`DA_WORKSPACES` on a branch `da/<short id>`. A fault is a WorkspaceError carrying one sentence and
what to do; the worktree and its commits are kept whatever goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from da.fleet import Delivery, Machine
from da.worker.errors import WorkerError

DEFAULT_ROOT = "~/.da/workspaces"
BRANCH_PREFIX = "da/"
REMOTE = "origin"
# Local git calls finish in well under a second; a minute means something is stuck.
GIT_TIMEOUT = 60.0
# Network calls (fetch, push, gh, glab) get longer, and never a prompt for a password.
NETWORK_TIMEOUT = 300.0
# Refreshing the base is only a courtesy: offline, the branch is cut from what was last fetched.
FETCH_TIMEOUT = 30.0
# A commit subject longer than this is cut: what `git log --oneline` and PR titles show well.
MAX_SUBJECT = 72
TASK_TRAILER = "Da-Task"
# Where the base a branch was cut from is remembered (the repository's config, never its checkout).
BASE_KEY = "dabase"
BASE_COMMIT_KEY = "dabasecommit"
SHORT_ID = re.compile(r"[0-9a-z]{1,32}")
URL_IN_TEXT = re.compile(r"https?://\S+")
NO_SPACE = "no space left on device"
PUSH_AUTH = re.compile(r"authentication failed|could not read username|permission denied|terminal prompts disabled"
                       r"|403|401|could not read from remote", re.IGNORECASE)


# ---- faults ------------------------------------------------------------------------------------

class WorkspaceError(WorkerError):
    """The workspace could not be made or delivered; `action` says what a person should do."""

    def __init__(self, sentence: str, action: str = "") -> None:
        super().__init__(sentence)
        self.sentence = sentence
        self.action = action


class NotARepository(WorkspaceError):
    """The folder is not inside a git repository."""


class NoSuchBase(WorkspaceError):
    """The base branch does not exist in the repository."""


class DetachedBase(WorkspaceError):
    """No base was named, the remote names no default branch and the checkout is on no branch."""


class DirtyBase(WorkspaceError):
    """No base was named and the current branch has uncommitted changes the worktree would not carry."""


class RepositoryBusy(WorkspaceError):
    """The repository is in the middle of a rebase or merge."""


class DiskFull(WorkspaceError):
    """The disk holding the repository or the workspaces is full."""


class PushRefused(WorkspaceError):
    """The remote refused the push (protected branch, hook, missing credentials)."""


class UnsupportedHost(WorkspaceError):
    """The remote is neither GitHub nor GitLab, so no pull/merge request can be opened."""


class ToolMissing(WorkspaceError):
    """gh or glab is not installed, or not logged in, on this machine."""


class WorktreeGone(WorkspaceError):
    """The task's worktree is no longer on this machine (pruned, or removed by hand)."""


class GitFailed(WorkspaceError):
    """A git command failed in a way none of the above names."""


# ---- settings and facts ------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkspaceSettings:
    """Where worktrees live (DA_WORKSPACES) and the environment git, gh and glab run with."""

    root: Path = field(default_factory=lambda: Path(DEFAULT_ROOT).expanduser())
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # This machine's delivery defaults from machines.yaml (push/pr when a payload does not say).
    machine: Machine | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], machine: Machine | None = None) -> WorkspaceSettings:
        """DA_WORKSPACES, default ~/.da/workspaces; git runs with this same environment."""
        root = Path(env.get("DA_WORKSPACES") or DEFAULT_ROOT).expanduser()
        return cls(root=root, env=dict(env), machine=machine)

    def delivery(self, repo: Path) -> Delivery:
        """The machine's (or this repository's) push/pr defaults."""
        return self.machine.delivery_for(repo) if self.machine is not None else Delivery()


@dataclass(frozen=True)
class Workspace:
    """One repository's worktree for one task."""

    repo: Path
    path: Path
    branch: str
    base: str
    base_commit: str
    task_id: str
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"repo": str(self.repo), "path": str(self.path), "branch": self.branch, "base": self.base,
                "base_commit": self.base_commit, "reused": self.reused}


@dataclass
class Summary:
    """What a task's branch holds against its base: the result's `workspace`."""

    repo: str
    path: str
    branch: str
    base: str
    base_commit: str
    commits: list[str]
    files_changed: int
    insertions: int
    deletions: int
    pushed: bool
    uncommitted: int = 0
    pr_url: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.commits) or self.uncommitted > 0

    @property
    def text(self) -> str:
        """One line a person reads: what changed on which branch."""
        if not self.changed:
            return f"no changes on {self.branch} (base {self.base})"
        pushed = ", pushed" if self.pushed else ""
        return (f"{len(self.commits)} commit(s) on {self.branch} (base {self.base}): {self.files_changed} file(s), "
                f"+{self.insertions} -{self.deletions}{pushed}")

    def to_json(self) -> dict[str, Any]:
        data = {**dataclasses.asdict(self), "changed": self.changed, "summary": self.text}
        if self.pr_url is None:
            data.pop("pr_url")
        return data


@dataclass(frozen=True)
class Listed:
    """A worktree found under the workspaces folder."""

    path: Path
    repo: Path
    branch: str
    task: str
    age: float
    pushed: bool
    empty: bool
    unpushed: int
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "repo": str(self.repo), "branch": self.branch, "task": self.task,
                "age": round(self.age), "pushed": self.pushed, "empty": self.empty, "unpushed": self.unpushed,
                "size": self.size}


@dataclass
class Pruned:
    """What prune did: removed worktrees and kept ones with the reason."""

    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# ---- running git, gh, glab -----------------------------------------------------------------------

def _env(settings: WorkspaceSettings) -> dict[str, str]:
    # Never wait for a password at a prompt no one sees; English messages so faults can be read.
    return {**(settings.env or os.environ), "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GH_PROMPT_DISABLED": "1"}


async def _exec(settings: WorkspaceSettings, argv: list[str], *, cwd: Path | None = None,
                timeout: float = GIT_TIMEOUT) -> _Run:
    """Run argv to completion; a program that cannot start or does not finish in time is a failed run."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=_env(settings), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        return _Run(127, "", f"{argv[0]}: command not found")
    except OSError as exc:
        return _Run(126, "", f"{argv[0]} could not start: {exc.strerror or exc}")
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError) as exc:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        if isinstance(exc, asyncio.CancelledError):
            raise
        return _Run(124, "", f"{argv[0]} did not finish within {timeout:g}s")
    return _Run(process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


async def _git(settings: WorkspaceSettings, cwd: Path, *args: str, timeout: float = GIT_TIMEOUT) -> _Run:
    return await _exec(settings, ["git", "-C", str(cwd), *args], timeout=timeout)


async def _git_ok(settings: WorkspaceSettings, cwd: Path, *args: str, what: str,
                  timeout: float = GIT_TIMEOUT) -> str:
    """stdout of a git call that must succeed; otherwise the fault it names."""
    run = await _git(settings, cwd, *args, timeout=timeout)
    if not run.ok:
        raise _fault(run, what, cwd)
    return run.stdout


def _fault(run: _Run, what: str, where: Path) -> WorkspaceError:
    message = _last_line(run.stderr or run.stdout)
    if NO_SPACE in (run.stderr + run.stdout).lower():
        return DiskFull(f"the disk is full: git could not {what} in {where}",
                        "free some space (or prune old workspaces with `da workspaces prune`), then retry")
    return GitFailed(f"git could not {what} in {where}: {message}", "read git's message, fix it, then retry")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


# ---- preparing ------------------------------------------------------------------------------------

def short_id(task_id: str) -> str:
    """The task's short id as a branch/folder name: lowercase hex, or a hash of whatever it is."""
    head = task_id[:8].lower()
    if SHORT_ID.fullmatch(head):
        return head
    return hashlib.sha1(task_id.encode()).hexdigest()[:8]


def branch_name(task_id: str) -> str:
    """`da/<short id>`: safe for git whatever the task's prompt says."""
    return BRANCH_PREFIX + short_id(task_id)


async def repository(settings: WorkspaceSettings, folder: str | Path) -> Path:
    """The top of the git repository holding `folder` (~ expanded, symlinks resolved)."""
    path = Path(os.path.realpath(os.path.expanduser(str(folder))))
    if not path.is_dir():
        raise NotARepository(f"{folder} does not exist or is not a folder",
                             "fix the path, or clone the repository there, then retry")
    run = await _git(settings, path, "rev-parse", "--show-toplevel")
    if not run.ok or not run.stdout.strip():
        if NO_SPACE in run.stderr.lower():
            raise _fault(run, "read the repository", path)
        raise NotARepository(f"{folder} is not a git repository",
                             "pass the folder of a git checkout (or run without a workspace: `git init` it first)")
    return Path(os.path.realpath(run.stdout.strip()))


async def is_repository(settings: WorkspaceSettings, folder: str | Path) -> bool:
    """Whether `folder` is inside a git repository (a workspace can be made for it)."""
    try:
        await repository(settings, folder)
    except NotARepository:
        return False
    return True


def workspace_path(settings: WorkspaceSettings, repo: Path, task_id: str) -> Path:
    """Where the task's worktree of `repo` lives: <root>/<repo name>/<short id>."""
    return settings.root / (repo.name or "repo") / short_id(task_id)


async def prepare(settings: WorkspaceSettings, folder: str | Path, task_id: str, *,
                  base: str | None = None) -> Workspace:
    """The task's worktree of the repository at `folder`, made on `da/<short id>` or reused as it was left."""
    repo = await repository(settings, folder)
    branch = branch_name(task_id)
    await _check_not_busy(settings, repo)
    existing = await _worktree_of(settings, repo, branch)
    if existing is not None and existing.is_dir():
        return await _reuse(settings, repo, existing, branch, task_id)
    await _git(settings, repo, "worktree", "prune")
    path = workspace_path(settings, repo, task_id)
    if path.exists():
        if any(path.iterdir()):
            raise GitFailed(f"{path} is in the way of the task's worktree (it is not a worktree of {repo})",
                            f"move or remove {path}, then retry")
        path.rmdir()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"the disk is full: cannot create {path.parent}",
                           "free some space, then retry") from exc
        raise GitFailed(f"cannot create {path.parent}: {exc.strerror}",
                        "set DA_WORKSPACES to a folder this worker can write, then restart it") from exc
    if await _branch_exists(settings, repo, branch):
        # A worker killed after the branch was made: carry on from what the branch holds.
        await _git_ok(settings, repo, "worktree", "add", str(path), branch, what=f"check out {branch}")
        return await _reuse(settings, repo, path, branch, task_id)
    base_name, base_ref = await _base(settings, repo, base)
    base_commit = (await _git_ok(settings, repo, "rev-parse", "--verify", f"{base_ref}^{{commit}}",
                                 what=f"read {base_ref}")).strip()
    await _git_ok(settings, repo, "worktree", "add", "--no-track", "-b", branch, str(path), base_commit,
                  what=f"add a worktree at {path}")
    await _git(settings, repo, "config", f"branch.{branch}.{BASE_KEY}", base_name)
    await _git(settings, repo, "config", f"branch.{branch}.{BASE_COMMIT_KEY}", base_commit)
    return Workspace(repo, path, branch, base_name, base_commit, task_id)


async def prepare_all(settings: WorkspaceSettings, folders: list[str], task_id: str, *,
                      base: str | None = None) -> list[Workspace]:
    """One worktree per repository, all on the task's one branch name; the first is where the agent works."""
    made: list[Workspace] = []
    seen: set[Path] = set()
    for folder in folders:
        workspace = await prepare(settings, folder, task_id, base=base)
        if workspace.repo not in seen:
            seen.add(workspace.repo)
            made.append(workspace)
    return made


async def _reuse(settings: WorkspaceSettings, repo: Path, path: Path, branch: str, task_id: str) -> Workspace:
    base_name = (await _git(settings, repo, "config", f"branch.{branch}.{BASE_KEY}")).stdout.strip()
    base_commit = (await _git(settings, repo, "config", f"branch.{branch}.{BASE_COMMIT_KEY}")).stdout.strip()
    if not base_commit:
        base_name, base_ref = await _base(settings, repo, None)
        base_commit = (await _git_ok(settings, repo, "merge-base", base_ref, branch, what="find the base")).strip()
    return Workspace(repo, Path(os.path.realpath(path)), branch, base_name, base_commit, task_id, reused=True)


async def reopen(settings: WorkspaceSettings, facts: Mapping[str, Any], task_id: str) -> Workspace:
    """The worktree a finished task's result names (`workspace`), as it is now, to deliver it later."""
    repo, path, branch = (facts.get(key) for key in ("repo", "path", "branch"))
    if not all(isinstance(value, str) and value for value in (repo, path, branch)):
        raise WorktreeGone(f"the result of task {short_id(task_id)} names no worktree",
                           "only an agent task that ran on a git repository can be pushed")
    repo_path = Path(str(repo))
    found = await _worktree_of(settings, repo_path, str(branch)) if repo_path.is_dir() else None
    if found is None or not found.is_dir():
        kept = repo_path.is_dir() and await _branch_exists(settings, repo_path, str(branch))
        raise WorktreeGone(f"the worktree of task {short_id(task_id)} ({path}) was removed, so there is nothing "
                           "here to push",
                           f"its branch {branch} is still in {repo}: push it from there with `git -C {repo} push "
                           f"{REMOTE} {branch}`" if kept else "run the task again if its work is still wanted")
    return await _reuse(settings, repo_path, found, str(branch), task_id)


async def _base(settings: WorkspaceSettings, repo: Path, base: str | None) -> tuple[str, str]:
    """(name a person and a PR use, ref to cut from): the named base, else the remote's default branch,
    else the current branch."""
    if base is not None:
        if not base or base.startswith("-") or "\x00" in base:
            raise NoSuchBase(f"{base!r} is not a branch name", "pass --base=BRANCH with an existing branch")
        for ref in (f"refs/heads/{base}", f"refs/remotes/{REMOTE}/{base}", base):
            if (await _git(settings, repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")).ok:
                name = base.removeprefix(f"{REMOTE}/") if ref == base else base
                return name, ref
        raise NoSuchBase(f"the base branch {base} does not exist in {repo}",
                         f"pass --base with a branch that exists there (see `git -C {repo} branch -a`)")
    remote_head = await _git(settings, repo, "symbolic-ref", "--quiet", f"refs/remotes/{REMOTE}/HEAD")
    if remote_head.ok and remote_head.stdout.strip():
        ref = remote_head.stdout.strip()
        name = ref.removeprefix(f"refs/remotes/{REMOTE}/")
        # Best effort: cut from what the remote has now; offline, what it had when last fetched.
        await _git(settings, repo, "fetch", "--quiet", REMOTE, name, timeout=FETCH_TIMEOUT)
        return name, ref
    current = await _git(settings, repo, "symbolic-ref", "--quiet", "--short", "HEAD")
    if not current.ok or not current.stdout.strip():
        raise DetachedBase(f"{repo} is on a detached HEAD and its remote names no default branch",
                           "pass --base=BRANCH, or check out a branch there")
    name = current.stdout.strip()
    dirty = await _git(settings, repo, "status", "--porcelain", "--untracked-files=no")
    if dirty.stdout.strip():
        raise DirtyBase(f"{repo} has uncommitted changes on {name}, which the task's worktree would not carry",
                        f"commit or stash them in {repo}, or pass --base={name} to start from its last commit")
    return name, f"refs/heads/{name}"


async def _check_not_busy(settings: WorkspaceSettings, repo: Path) -> None:
    for marker, what, fix in (("rebase-merge", "a rebase", "git rebase --continue or --abort"),
                              ("rebase-apply", "a rebase", "git rebase --continue or --abort"),
                              ("MERGE_HEAD", "a merge", "git merge --continue or --abort")):
        found = (await _git(settings, repo, "rev-parse", "--git-path", marker)).stdout.strip()
        if found and (repo / found).exists():
            raise RepositoryBusy(f"{repo} is in the middle of {what}",
                                 f"finish it there ({fix}), then retry")


async def _branch_exists(settings: WorkspaceSettings, repo: Path, branch: str) -> bool:
    return (await _git(settings, repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")).ok


async def _worktrees(settings: WorkspaceSettings, repo: Path) -> list[dict[str, str]]:
    run = await _git(settings, repo, "worktree", "list", "--porcelain")
    entries: list[dict[str, str]] = []
    for block in run.stdout.strip().split("\n\n"):
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            entry[key] = value
        if "worktree" in entry:
            entries.append(entry)
    return entries


async def _worktree_of(settings: WorkspaceSettings, repo: Path, branch: str) -> Path | None:
    for entry in await _worktrees(settings, repo):
        if entry.get("branch") == f"refs/heads/{branch}":
            return Path(entry["worktree"])
    return None


# ---- after a turn ---------------------------------------------------------------------------------

def commit_subject(prompt: str, task_id: str) -> str:
    """The first line of the prompt, cut to a commit subject."""
    for line in prompt.splitlines():
        line = "".join(ch for ch in line if ch.isprintable()).strip()
        if line:
            return line if len(line) <= MAX_SUBJECT else line[:MAX_SUBJECT - 1].rstrip() + "…"
    return f"da task {short_id(task_id)}"


async def commit_leftovers(settings: WorkspaceSettings, workspace: Workspace, prompt: str) -> bool:
    """Commit whatever the agent left uncommitted on the task branch; True when there was something."""
    path = workspace.path
    await _git_ok(settings, path, "add", "-A", what="stage the agent's changes")
    if (await _git(settings, path, "diff", "--cached", "--quiet")).ok:
        return False
    identity: list[str] = []
    if not (await _git(settings, path, "config", "user.email")).stdout.strip():
        identity = ["-c", "user.name=da", "-c", "user.email=da@localhost"]
    # Hooks and signing belong to the person's own commits; the agent's leftovers must land on the branch.
    run = await _exec(settings, ["git", "-C", str(path), *identity, "-c", "commit.gpgsign=false", "commit",
                                 "--quiet", "--no-verify", "-m", commit_subject(prompt, workspace.task_id),
                                 "--trailer", f"{TASK_TRAILER}: {workspace.task_id}"])
    if not run.ok:
        fault = _fault(run, "commit the agent's changes", path)
        fault.action = f"{fault.action}; the changes are still in {path}"
        raise fault
    return True


async def summary(settings: WorkspaceSettings, workspace: Workspace) -> Summary:
    """What the branch holds against its base: commits, diffstat, uncommitted files, pushed or not."""
    path, base = workspace.path, workspace.base_commit
    log = await _git_ok(settings, path, "log", "--format=%h %s", f"{base}..HEAD", what="read the branch's commits")
    numstat = await _git_ok(settings, path, "diff", "--numstat", base, "HEAD", what="measure the diff")
    files = insertions = deletions = 0
    for line in numstat.splitlines():
        added, removed, _ = [*line.split("\t", 2), "", ""][:3]
        files += 1
        insertions += int(added) if added.isdigit() else 0
        deletions += int(removed) if removed.isdigit() else 0
    status = await _git(settings, path, "status", "--porcelain")
    return Summary(repo=str(workspace.repo), path=str(path), branch=workspace.branch, base=workspace.base,
                   base_commit=base, commits=log.splitlines(), files_changed=files, insertions=insertions,
                   deletions=deletions, pushed=await _pushed(settings, path, workspace.branch),
                   uncommitted=len(status.stdout.splitlines()))


async def diff(settings: WorkspaceSettings, workspace: Workspace, *, color: bool = False) -> str:
    """The branch's diff against the commit it was cut from."""
    return await _git_ok(settings, workspace.path, "diff", "--color=always" if color else "--no-color",
                         workspace.base_commit, "HEAD", what="diff the branch")


async def _pushed(settings: WorkspaceSettings, path: Path, branch: str) -> bool:
    remote = f"refs/remotes/{REMOTE}/{branch}"
    if not (await _git(settings, path, "rev-parse", "--verify", "--quiet", remote)).ok:
        return False
    return (await _git(settings, path, "merge-base", "--is-ancestor", "HEAD", remote)).ok


async def discard_if_empty(settings: WorkspaceSettings, workspace: Workspace) -> bool:
    """Remove a worktree and branch that hold nothing (a cancelled task that changed nothing)."""
    found = await summary(settings, workspace)
    if found.changed:
        return False
    await _remove(settings, workspace.repo, workspace.path, workspace.branch)
    return True


# ---- delivery -------------------------------------------------------------------------------------

async def push(settings: WorkspaceSettings, workspace: Workspace) -> None:
    """Push the task branch to the repository's remote."""
    run = await _git(settings, workspace.path, "push", "--porcelain", "--set-upstream", REMOTE,
                     f"{workspace.branch}:refs/heads/{workspace.branch}", timeout=NETWORK_TIMEOUT)
    if run.ok:
        return
    text = f"{run.stderr}\n{run.stdout}"
    if NO_SPACE in text.lower():
        raise _fault(run, "push", workspace.path)
    reason = _push_reason(text)
    if PUSH_AUTH.search(text):
        raise PushRefused(f"the push of {workspace.branch} to {REMOTE} was refused for lack of credentials: {reason}",
                          f"log in to the remote on this machine (ssh key or credential helper), then push "
                          f"{workspace.branch} from {workspace.path}")
    raise PushRefused(f"the remote refused the push of {workspace.branch}: {reason}",
                      f"read the remote's reason; the work is on {workspace.branch} in {workspace.path}")


def _push_reason(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("remote:") and line.removeprefix("remote:").strip():
            return line.removeprefix("remote:").strip()[:300]
    for line in text.splitlines():
        if "[rejected]" in line or "[remote rejected]" in line or line.startswith(("fatal:", "error:")):
            return line.strip()[:300]
    return _last_line(text)


def forge_of(url: str) -> tuple[str, str] | None:
    """(`gh` or `glab`, host) for a remote URL on GitHub or GitLab, else None."""
    host = remote_host(url)
    if host is None:
        return None
    if host == "github.com" or host.startswith("github.") or ".github." in host:
        return "gh", host
    if host == "gitlab.com" or host.startswith("gitlab.") or ".gitlab." in host:
        return "glab", host
    return None


def remote_host(url: str) -> str | None:
    """The host of https://host/..., ssh://user@host/... or user@host:path; None for a local path."""
    if "://" in url:
        host = urlsplit(url).hostname
        return host.lower() if host else None
    match = re.match(r"^(?:[^@/]+@)?([^:/]+):", url)
    return match.group(1).lower() if match else None


async def open_request(settings: WorkspaceSettings, workspace: Workspace, *, title: str, body: str) -> str:
    """Open a pull request (gh) or merge request (glab) for the pushed branch; returns its URL."""
    url = (await _git(settings, workspace.repo, "config", "--get", f"remote.{REMOTE}.url")).stdout.strip()
    if not url:
        raise UnsupportedHost(f"{workspace.repo} has no remote {REMOTE}, so no pull request can be opened",
                              f"add a GitHub or GitLab remote named {REMOTE}; the work is on {workspace.branch}")
    forge = forge_of(url)
    if forge is None:
        raise UnsupportedHost(f"the remote {REMOTE} ({remote_host(url) or url}) is neither GitHub nor GitLab, so no "
                              "pull request can be opened",
                              f"open one by hand from the pushed branch {workspace.branch}")
    tool, host = forge
    product = "GitHub CLI (gh): https://cli.github.com" if tool == "gh" else \
        "GitLab CLI (glab): https://gitlab.com/gitlab-org/cli"
    if shutil.which(tool, path=_env(settings).get("PATH")) is None:
        raise ToolMissing(f"{tool} is not installed on this machine, so no {_kind(tool)} was opened",
                          f"install the {product}, run `{tool} auth login`, then retry; the branch "
                          f"{workspace.branch} is pushed")
    status = await _exec(settings, [tool, "auth", "status", "--hostname", host], cwd=workspace.path,
                         timeout=NETWORK_TIMEOUT)
    if not status.ok:
        raise ToolMissing(f"{tool} is not logged in to {host} on this machine, so no {_kind(tool)} was opened",
                          f"run `{tool} auth login --hostname {host}`, then retry; the branch {workspace.branch} "
                          "is pushed")
    if tool == "gh":
        argv = ["gh", "pr", "create", "--head", workspace.branch, "--base", workspace.base, "--title", title,
                "--body", body]
    else:
        argv = ["glab", "mr", "create", "--source-branch", workspace.branch, "--target-branch", workspace.base,
                "--title", title, "--description", body, "--yes"]
    run = await _exec(settings, argv, cwd=workspace.path, timeout=NETWORK_TIMEOUT)
    found = URL_IN_TEXT.findall(f"{run.stdout}\n{run.stderr}")
    if run.ok and found:
        return found[-1]
    if found and "already exists" in f"{run.stdout}\n{run.stderr}":
        return found[-1]
    raise GitFailed(f"{tool} could not open a {_kind(tool)}: {_last_line(run.stderr or run.stdout)}",
                    f"read {tool}'s message; the branch {workspace.branch} is pushed")


async def describe_request(settings: WorkspaceSettings, workspace: Workspace, url: str, body: str) -> None:
    """Replace an opened pull/merge request's body (to link the task's requests in other repositories)."""
    remote = (await _git(settings, workspace.repo, "config", "--get", f"remote.{REMOTE}.url")).stdout.strip()
    forge = forge_of(remote)
    if forge is None:
        return
    tool = forge[0]
    argv = ["gh", "pr", "edit", url, "--body", body] if tool == "gh" else \
        ["glab", "mr", "update", workspace.branch, "--description", body]
    run = await _exec(settings, argv, cwd=workspace.path, timeout=NETWORK_TIMEOUT)
    if not run.ok:
        raise GitFailed(f"{tool} could not link {url} to the task's other {_kind(tool)}s: "
                        f"{_last_line(run.stderr or run.stdout)}", f"add the links by hand; {url} is open")


def _kind(tool: str) -> str:
    return "pull request" if tool == "gh" else "merge request"


# ---- listing and pruning ---------------------------------------------------------------------------

async def list_workspaces(settings: WorkspaceSettings) -> list[Listed]:
    """Every task worktree under the workspaces folder, with whether its work is pushed."""
    found: list[Listed] = []
    if not settings.root.is_dir():
        return found
    now = time.time()
    for repo_dir in sorted(settings.root.iterdir()):
        if not repo_dir.is_dir():
            continue
        for path in sorted(repo_dir.iterdir()):
            if not (path / ".git").is_file():
                continue
            branch = (await _git(settings, path, "symbolic-ref", "--quiet", "--short", "HEAD")).stdout.strip()
            common = (await _git(settings, path, "rev-parse", "--path-format=absolute", "--git-common-dir")).stdout
            repo = Path(common.strip()).parent
            base = (await _git(settings, repo, "config", f"branch.{branch}.{BASE_COMMIT_KEY}")).stdout.strip()
            dirty = bool((await _git(settings, path, "status", "--porcelain")).stdout.strip())
            unpushed = await _unpushed(settings, path, branch)
            head = (await _git(settings, path, "rev-parse", "HEAD")).stdout.strip()
            found.append(Listed(path=path, repo=repo, branch=branch, task=path.name,
                                age=now - path.stat().st_mtime, pushed=unpushed == 0 and not dirty,
                                empty=(head == base and not dirty), unpushed=unpushed + (1 if dirty else 0),
                                size=_size(path)))
    return found


def _size(path: Path) -> int:
    """Bytes of the worktree's files (its objects live in the repository, not here)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total


async def _unpushed(settings: WorkspaceSettings, path: Path, branch: str) -> int:
    """Commits on the branch that no remote branch holds."""
    run = await _git(settings, path, "rev-list", "--count", "HEAD", "--not", "--remotes")
    return int(run.stdout.strip()) if run.ok and run.stdout.strip().isdigit() else 1


async def prune(settings: WorkspaceSettings, *, older_than: float = 0.0, finished: set[str] | None = None,
                force: set[str] | frozenset[str] = frozenset()) -> Pruned:
    """Remove worktrees (of finished tasks, when `finished` names them) older than `older_than` seconds whose
    work is pushed or empty; a branch with unpushed work is kept unless `force` names it (branch or task)."""
    result = Pruned()
    for listed in await list_workspaces(settings):
        name = str(listed.path)
        if finished is not None and listed.task not in finished:
            result.kept[name] = "its task is not finished"
            continue
        if listed.age < older_than:
            result.kept[name] = "younger than the limit"
            continue
        forced = listed.branch in force or listed.task in force
        if listed.unpushed and not listed.empty and not forced:
            result.kept[name] = (f"{listed.branch} has {listed.unpushed} unpushed change(s); push it, or name it "
                                 "with --force to delete it")
            continue
        await _remove(settings, listed.repo, listed.path, listed.branch)
        result.removed.append(name)
    return result


async def _remove(settings: WorkspaceSettings, repo: Path, path: Path, branch: str) -> None:
    await _git_ok(settings, repo, "worktree", "remove", "--force", str(path), what=f"remove the worktree {path}")
    if branch:
        await _git(settings, repo, "branch", "-D", branch)
        await _git(settings, repo, "config", "--remove-section", f"branch.{branch}")
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when no other task's worktree of this repository is left


# ---- around an agent task: what the worker does before and after the handler ----------------------

AGENT_TASK = "agent_run"
# The diff kept in the result, so `da diff` prints it from any machine; the branch has all of it.
MAX_DIFF = 200 * 1024
# The agent's answer quoted in a pull request's body.
MAX_BODY_ANSWER = 8000


# The task type that delivers a finished agent task's work later (handlers/deliver.py).
DELIVER_TASK = "deliver"


def with_delivery(capabilities: tuple[str, ...]) -> tuple[str, ...]:
    """A machine that runs agent tasks also delivers their work later: only it holds their worktrees."""
    if AGENT_TASK in capabilities and DELIVER_TASK not in capabilities:
        return (*capabilities, DELIVER_TASK)
    return capabilities


@dataclass
class TaskWorkspaces:
    """The worktrees an agent task gets: planned before its start, made before its handler runs."""

    key: str
    repo: Path
    folders: list[str]
    base: str | None
    push: bool
    pr: bool
    lock: str
    made: list[Workspace] = field(default_factory=list)


def task_folders(payload: Mapping[str, Any]) -> list[str]:
    """The repositories a task names: `repos`, else `repo`, else its checkout (`cwd` / `repo_path`)."""
    repos = payload.get("repos")
    if isinstance(repos, list) and repos and all(isinstance(item, str) and item for item in repos):
        return list(repos)
    for key in ("repo", "cwd", "repo_path"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return [value]
    return []


async def plan(settings: WorkspaceSettings, task_type: str, task_id: str,
               payload: Mapping[str, Any]) -> TaskWorkspaces | None:
    """The workspaces of an agent task whose folder is a git repository; None runs it in its folder as before.

    A follow-up names the task it continues (`continue`) and gets that task's worktree and branch.
    """
    if task_type != AGENT_TASK or payload.get("workspace") is False:
        return None
    folders = task_folders(payload)
    if not folders or any("\x00" in folder for folder in folders):
        return None
    try:
        repo = await repository(settings, folders[0])
    except WorkspaceError:
        return None  # not a repository (or unreadable): the task runs where it said, as before
    follows = payload.get("continue")
    key = follows if isinstance(follows, str) and follows.strip() else task_id
    base = payload.get("base")
    existing = await _worktree_of(settings, repo, branch_name(key))
    lock = existing if existing is not None else workspace_path(settings, repo, key)
    default = settings.delivery(repo)
    pr = payload["pr"] if isinstance(payload.get("pr"), bool) else default.pr is True
    push = payload["push"] if isinstance(payload.get("push"), bool) else default.push is True
    return TaskWorkspaces(key=key, repo=repo, folders=folders, base=base if isinstance(base, str) else None,
                          push=push or pr, pr=pr, lock=os.path.realpath(lock))


async def enter(settings: WorkspaceSettings, spaces: TaskWorkspaces, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Make (or reuse) the worktrees; the handler's payload then names the first as its folder."""
    spaces.made = await prepare_all(settings, spaces.folders, spaces.key, base=spaces.base)
    given = {key: value for key, value in payload.items() if key not in ("repo_path", "repos", "repo")}
    given["cwd"] = str(spaces.made[0].path)
    if len(spaces.made) > 1:
        given["additional_dirs"] = [str(made.path) for made in spaces.made[1:]]
    return given


async def finish(settings: WorkspaceSettings, spaces: TaskWorkspaces, details: dict[str, Any], *, prompt: str,
                 task_id: str, answer: str = "", link: str = "") -> WorkspaceError | None:
    """Commit leftovers, summarise, push and open requests when asked; facts go in `details`.

    Returns the fault a person must act on (the work stays on the branch), else None.
    """
    summaries: list[Summary] = []
    fault: WorkspaceError | None = None
    try:
        for made in spaces.made:
            await commit_leftovers(settings, made, prompt)
            summaries.append(await summary(settings, made))
        await deliver(settings, list(zip(spaces.made, summaries, strict=True)), push_too=spaces.push, pr=spaces.pr,
                      prompt=prompt, task_id=task_id, answer=answer, link=link)
    except WorkspaceError as exc:
        fault = exc
    if not summaries and spaces.made:
        with contextlib.suppress(WorkspaceError):
            summaries = [await summary(settings, made) for made in spaces.made]
    if summaries:
        details["workspace"] = summaries[0].to_json()
        if len(summaries) > 1:
            details["workspaces"] = [found.to_json() for found in summaries]
        with contextlib.suppress(WorkspaceError):
            text = "".join([await diff(settings, made) for made in spaces.made])
            details["diff"] = text[:MAX_DIFF]
            if len(text) > MAX_DIFF:
                details["diff_truncated"] = (f"first {MAX_DIFF} of {len(text)} characters; the whole diff is on "
                                             f"{spaces.made[0].branch}")
    if fault is not None:
        details["workspace_error"] = fault.sentence
    return fault


async def deliver(settings: WorkspaceSettings, spaces: list[tuple[Workspace, Summary]], *, push_too: bool, pr: bool,
                  prompt: str, task_id: str, answer: str = "", link: str = "") -> None:
    """Push each changed branch and open one PR/MR per changed repository (each linking the others); the
    summaries learn what was done, so a fault part-way leaves them true."""
    changed = [(made, found) for made, found in spaces if found.changed]
    if push_too or pr:
        for made, found in changed:
            await push(settings, made)
            found.pushed = True
    if not pr:
        return
    opened = False
    for made, found in changed:
        if found.pr_url is None:
            body = _request_body(answer, task_id, link, [])
            found.pr_url = await open_request(settings, made, title=commit_subject(prompt, task_id), body=body)
            opened = True
    if opened and len(changed) > 1:
        # One change across several repositories: each request links the others.
        for made, found in changed:
            others = [f"{other.repo.name}: {seen.pr_url}" for other, seen in changed if seen is not found]
            await describe_request(settings, made, str(found.pr_url), _request_body(answer, task_id, link, others))


def _request_body(answer: str, task_id: str, link: str, others: list[str]) -> str:
    parts = [answer.strip()[:MAX_BODY_ANSWER] or "(the agent gave no answer)", f"da task {task_id}"]
    if link:
        parts.append(f"Thread: {link}")
    if others:
        parts.append("One change across several repositories; the others:\n" + "\n".join(f"- {o}" for o in others))
    return "\n\n".join(parts)


async def discard_unchanged(settings: WorkspaceSettings, spaces: TaskWorkspaces) -> None:
    """After a cancel: remove the worktrees that hold nothing; any with work stay."""
    for made in spaces.made:
        with contextlib.suppress(WorkspaceError):
            await discard_if_empty(settings, made)
