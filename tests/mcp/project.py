"""Project-aware startup: `pyro mcp serve` started in a messy Git checkout (or with --repo-url)
seeds workspaces created without seed_path from the project's files only.

Usage: project.py checkout | repo_url | errors
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import PYRO, Tools, initialize, log, server_env

ENV = "debian:12"
TRACKED_SOCKET = "run/server.sock"
SKIPPED_SOCKET = [{"path": TRACKED_SOCKET, "reason": "socket"}]


def git(cwd, *args):
    p = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, capture_output=True, text=True, env=git_env(),
    )
    assert p.returncode == 0, f"git {args}: {p.stderr}"
    return p.stdout.strip()


def git_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


TRACKED = {
    ".gitignore": "build/\n*.log\n",
    "README.md": "# demo\n",
    "src/calc.sh": "add() {\n    echo $(($1 - $2))\n}\n",
    "tests/test_calc.sh": ". src/calc.sh\ntest \"$(add 2 3)\" = 5\n",
}


def make_checkout(root):
    """A checkout with tracked files, a tracked symlink and untracked junk: a unix socket, an
    unreadable file, an ignored 200 MB build directory (sparse), an ignored log, a note."""
    git(root, "init", "-q")
    for path, text in TRACKED.items():
        os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
        with open(os.path.join(root, path), "w") as f:
            f.write(text)
    os.symlink("src/calc.sh", os.path.join(root, "calc-link"))
    # Committed as a placeholder file, now a live socket in the working tree: git still lists
    # it, and the seed skips it with a reason instead of failing.
    os.makedirs(os.path.join(root, "run"))
    with open(os.path.join(root, TRACKED_SOCKET), "w") as f:
        f.write("placeholder\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "initial")
    os.unlink(os.path.join(root, TRACKED_SOCKET))
    tracked_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tracked_sock.bind(os.path.join(root, TRACKED_SOCKET))
    build = os.path.join(root, "build")
    os.makedirs(os.path.join(build, "obj"))
    for i in range(4):
        with open(os.path.join(build, "obj", f"big{i}.o"), "wb") as f:
            f.truncate(50 * 1024 * 1024)
    with open(os.path.join(root, "debug.log"), "w") as f:
        f.write("ignored log\n")
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("untracked, not ignored\n")
    secret = os.path.join(root, "secret.key")
    with open(secret, "w") as f:
        f.write("unreadable\n")
    os.chmod(secret, 0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(root, "dev.sock"))
    sock.listen(1)
    return git(root, "rev-parse", "HEAD"), Sockets(sock, tracked_sock)


class Sockets:
    def __init__(self, *socks):
        self.socks = socks

    def close(self):
        for s in self.socks:
            s.close()


@contextlib.asynccontextmanager
async def server(cwd, *extra):
    params = StdioServerParameters(
        command=PYRO, args=["mcp", "serve", "--profile", "workspace-full", *extra], env=server_env(), cwd=cwd,
    )
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as s:
            await initialize(s, None)
            yield Tools(s, (await s.list_tools()).tools)


async def listing(t, wid):
    r = await t.ok("workspace_file_list", workspace_id=wid, path="/workspace", recursive=True)
    return {e["path"].removeprefix("/workspace/"): e["artifact_type"] for e in r["entries"]}


def expected_tree(files, links=()):
    want = {}
    for path in files:
        want[path] = "file"
        parts = path.split("/")
        for i in range(1, len(parts)):
            want["/".join(parts[:i])] = "directory"
    for link in links:
        want[link] = "symlink"
    return want


async def checkout():
    with tempfile.TemporaryDirectory(prefix="pyro-project-") as tmp:
        root = os.path.realpath(tmp)
        head, sock = make_checkout(root)
        # Started in a subdirectory: the checkout's top level is the project.
        async with server(os.path.join(root, "src")) as t:
            info = await t.ok("workspace_create", environment=ENV, mem_mib=512)
            wid, seed = info["workspace_id"], info["workspace_seed"]
            log("seed", seed)
            assert seed["origin_kind"] == "git_checkout", seed
            assert seed["origin_ref"] == head, (seed, head)
            assert seed["seed_path"] == root and seed["mode"] == "directory", seed
            assert seed["skipped_count"] == 1 and seed["skipped"] == SKIPPED_SOCKET, seed
            # Only the tracked files (the 200 MB build dir was never read).
            assert seed["bytes_written"] < 4096, seed
            tree = await listing(t, wid)
            assert tree == expected_tree(TRACKED, ["calc-link"]) | {"run": "directory"}, tree
            link = await t.ok("workspace_exec", workspace_id=wid, command="readlink calc-link; cat src/calc.sh")
            assert link["stdout"] == "src/calc.sh\n" + TRACKED["src/calc.sh"], link
            # The project's failing test fails in the guest, a fix makes it pass, and the diff
            # against the seeded baseline shows just that fix.
            failing = await t.ok("workspace_exec", workspace_id=wid, command="sh tests/test_calc.sh")
            assert failing["exit_code"] != 0, failing
            await t.ok("workspace_file_write", workspace_id=wid, path="src/calc.sh",
                       text=TRACKED["src/calc.sh"].replace("$1 - $2", "$1 + $2"))
            passing = await t.ok("workspace_exec", workspace_id=wid, command="sh tests/test_calc.sh")
            assert passing["exit_code"] == 0, passing
            diff = await t.ok("workspace_diff", workspace_id=wid)
            assert diff["changed"] and diff["summary"]["modified"] == 1 and diff["summary"]["total"] == 1, diff
            assert "-    echo $(($1 - $2))\n+    echo $(($1 + $2))" in diff["patch"], diff["patch"]
            # An explicit seed_path still wins over the project.
            plain = os.path.join(tmp, "src")
            other = await t.ok("workspace_create", environment=ENV, mem_mib=512, seed_path=plain)
            assert other["workspace_seed"]["origin_kind"] == "path", other["workspace_seed"]
            assert other["workspace_seed"]["origin_ref"] is None, other["workspace_seed"]
            assert other["workspace_seed"]["mode"] == "directory", other["workspace_seed"]
            for w in (wid, other["workspace_id"]):
                await t.ok("workspace_delete", workspace_id=w)
        # Untracked files that are not ignored, when asked: notes.txt (and secret.key, which
        # only a non-root server cannot read: then it is skipped with a reason). Ignored
        # build/ and debug.log never; git does not list the socket.
        async with server(root, "--project-include-untracked") as t:
            info = await t.ok("workspace_create", environment=ENV, mem_mib=512)
            seed = info["workspace_seed"]
            log("seed with untracked", seed)
            tree = await listing(t, info["workspace_id"])
            want = expected_tree([*TRACKED, "notes.txt"], ["calc-link"]) | {"run": "directory"}
            if os.geteuid() == 0:
                want["secret.key"] = "file"
                assert seed["skipped"] == SKIPPED_SOCKET, seed
            else:
                reasons = {x["path"]: x["reason"] for x in seed["skipped"]}
                assert reasons.keys() == {"secret.key", TRACKED_SOCKET}, seed
                assert reasons["secret.key"].startswith("unreadable"), seed
            assert tree == want, tree
            await t.ok("workspace_delete", workspace_id=info["workspace_id"])
        sock.close()


async def repo_url():
    with tempfile.TemporaryDirectory(prefix="pyro-repo-") as tmp:
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        first, sock = make_checkout(work)
        sock.close()
        git(work, "tag", "v1")
        with open(os.path.join(work, "CHANGES"), "w") as f:
            f.write("second\n")
        git(work, "add", "CHANGES")
        git(work, "commit", "-qm", "second")
        bare = os.path.join(tmp, "repo.git")
        git(tmp, "clone", "-q", "--bare", work, bare)
        url = f"file://{bare}"
        async with server(tmp, "--repo-url", url, "--repo-ref", "v1") as t:
            info = await t.ok("workspace_create", environment=ENV, mem_mib=512)
            seed = info["workspace_seed"]
            log("repo seed", seed)
            assert seed["origin_kind"] == "repo_url" and seed["origin_ref"] == first, (seed, first)
            assert seed["seed_path"] == url, seed
            assert seed["skipped_count"] == 0, seed
            tree = await listing(t, info["workspace_id"])
            assert tree == expected_tree([*TRACKED, TRACKED_SOCKET], ["calc-link"]), tree
            await t.ok("workspace_delete", workspace_id=info["workspace_id"])
        projects = os.path.join(os.environ["PYRO_HOME"], "projects")
        assert os.listdir(projects) == [], f"the clone outlived its server: {os.listdir(projects)}"


def serve_fails(cwd, args, needle, env=None):
    """`pyro mcp serve ARGS` must exit at once, non-zero, with `needle` in its error."""
    p = subprocess.run([PYRO, "mcp", "serve", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120, env=env or server_env())
    assert p.returncode != 0, f"{args} should fail: {p}"
    assert needle in p.stderr, f"{args}: expected {needle!r} in {p.stderr!r}"
    log(f"{args} -> {p.stderr.strip().splitlines()[-1]}")


def errors():
    with tempfile.TemporaryDirectory(prefix="pyro-project-err-") as tmp:
        missing = os.path.join(tmp, "missing")
        serve_fails(tmp, ["--project-path", missing], f"project path {missing} does not exist")
        afile = os.path.join(tmp, "file")
        open(afile, "w").close()
        serve_fails(tmp, ["--project-path", afile], "is not a directory")
        if os.geteuid() != 0:
            locked = os.path.join(tmp, "locked")
            os.makedirs(locked, mode=0)
            serve_fails(tmp, ["--project-path", locked], "is not readable")
        serve_fails(tmp, ["--repo-url", f"file://{missing}.git"], "cannot be cloned")
        serve_fails(tmp, ["--repo-url", f"file://{missing}.git"], "git ls-remote")
        work = os.path.join(tmp, "work")
        os.makedirs(work)
        _, sock = make_checkout(work)
        sock.close()
        bare = os.path.join(tmp, "repo.git")
        git(tmp, "clone", "-q", "--bare", work, bare)
        serve_fails(tmp, ["--repo-url", f"file://{bare}", "--repo-ref", "no-such-branch"],
                    "has no branch, tag or commit 'no-such-branch'")
        serve_fails(tmp, ["--repo-ref", "main"], "--repo-url")
        serve_fails(tmp, ["--project-path", work, "--repo-url", f"file://{bare}"], "cannot be used with")
        # No git on PATH inside a checkout: say so, and how to go on without it.
        nogit = dict(server_env(), PATH=os.path.join(tmp, "empty-bin"))
        serve_fails(work, [], "git is needed", env=nogit)
        serve_fails(work, [], "--no-project", env=nogit)
        # Nothing was left behind by the failed clones.
        projects = os.path.join(os.environ["PYRO_HOME"], "projects")
        assert not os.path.exists(projects) or os.listdir(projects) == [], os.listdir(projects)


def main():
    which = sys.argv[1]
    if which == "errors":
        errors()
    else:
        asyncio.run({"checkout": checkout, "repo_url": repo_url}[which]())
    log(f"project {which}: ok")


if __name__ == "__main__":
    main()
