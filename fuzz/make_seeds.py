#!/usr/bin/env python3
"""Writes the hand-made seed inputs under corpus/ (run once; the fuzzers grow the corpora).

protocol_frames: MessagePack frames as pyro-protocol encodes them (maps with field names), both
as bare bodies and as length-prefixed streams. archive_extract: tars with traversal names,
symlinks, hard links and directory/file conflicts. patch_parse: `<old text> NUL <patch>`.
No third-party modules: the tiny MessagePack encoder below covers what the frames use.
"""
import io, os, struct, tarfile

from seed_tar import tar

HERE = os.path.dirname(os.path.abspath(__file__))


def mp(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if v < 0:
            return b"\xd3" + struct.pack(">q", v)
        return b"\xcf" + struct.pack(">Q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


state = {"name": "web", "command": "python3 -m http.server", "cwd": "/workspace", "state": "running",
         "pid": 42, "exit_code": None, "readiness": {"type": "file", "path": "/tmp/ready"},
         "started_at": 1.5, "ready_at": None, "ended_at": None, "stop_reason": None}
responses = {
    "ready": {"type": "ready", "agent_version": "0.1.0", "protocol_version": 1, "boot_ms": 900},
    "pong": {"type": "pong"},
    "ok": {"type": "ok"},
    "exec": {"type": "exec", "stdout": b"hi\n", "stderr": b"", "stdout_truncated": False,
             "stderr_truncated": False, "exit_code": 0, "timed_out": False, "duration_ms": 3},
    "error": {"type": "error", "kind": "io", "message": "no such file"},
    "listing": {"type": "fs", "op": "listing", "path": "/workspace", "artifact_type": "directory",
                "entries": [{"path": "/workspace/../../etc", "artifact_type": "symlink", "size_bytes": 3,
                             "link_target": "/etc"}]},
    "exported": {"type": "fs", "op": "exported", "transfer_id": "../x", "size": 2**63, "artifact_type": "file",
                 "entry_count": 1, "bytes_written": 10},
    "data": {"type": "fs", "op": "data", "data": b"\x00" * 16},
    "shell": {"type": "shell", "kind": "output", "status": {"shell_id": "s1", "running": True, "exit_code": None},
              "cursor": 0, "next_cursor": 5, "output": "hello", "truncated": False, "dropped_chars": 0},
    "services": {"type": "service", "kind": "list", "services": [state]},
}
requests = {
    "exec": {"type": "exec", "command": "ls", "cwd": None, "env": {"A": "b"}, "timeout_ms": 1000,
             "output_cap_bytes": 100},
    "read": {"type": "fs", "op": "read", "path": "/workspace/a", "max_bytes": 10},
    "shutdown": {"type": "supervisor", "op": "shutdown", "timeout_ms": 5},
}
stream = b""
for name, body in responses.items():
    frame = mp({"id": 7, "response": body})
    write("protocol_frames", "response-" + name, frame)
    stream += struct.pack(">I", len(frame)) + frame
for name, body in requests.items():
    write("protocol_frames", "request-" + name, mp({"id": 9, "request": body}))
write("protocol_frames", "stream", stream)




write("archive_extract", "tree", tar([("src", "dir", None), ("src/a.txt", "file", b"hello\n"),
                                      ("src/link", "sym", "a.txt"), ("top.txt", "file", b"x")]))
write("archive_extract", "file", tar([("only.txt", "file", b"content")]))
write("archive_extract", "symlink", tar([("l", "sym", "target")]))
write("archive_extract", "traversal", tar([("../escape.txt", "file", b"x"), ("/abs.txt", "file", b"y")]))
write("archive_extract", "symlink-parent", tar([("up", "sym", "../.."), ("up/evil.txt", "file", b"z")]))
write("archive_extract", "hardlink", tar([("a", "file", b"1"), ("b", "hard", "a"), ("c", "hard", "../../etc/passwd")]))
write("archive_extract", "conflict", tar([("d", "file", b"1"), ("d", "dir", None), ("d/e", "file", b"2")]))

old = "one\ntwo\nthree\n"
write("patch_parse", "modify", (old + "\0--- a/f.txt\n+++ b/f.txt\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n").encode())
write("patch_parse", "add", ("\0diff --git a/n.txt b/n.txt\nnew file mode 100644\n--- /dev/null\n+++ b/n.txt\n"
                             "@@ -0,0 +1,2 @@\n+a\n+b\n\\ No newline at end of file\n").encode())
write("patch_parse", "delete", (old + "\0--- a/f.txt\n+++ /dev/null\n@@ -1,3 +0,0 @@\n-one\n-two\n-three\n").encode())
write("patch_parse", "git-rename-mode", ("x\n\0diff --git a/x b/y\nold mode 100644\nnew mode 100755\n"
                                         "--- a/x\n+++ b/y\n@@ -1 +1 @@\n-x\n+y\n").encode())
