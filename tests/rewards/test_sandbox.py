"""The code sandbox: hostile programs end within their limits, fail, and leave nothing behind.

Every hostile program runs under the layers this machine gives (``auto``: as root, a separate uid +
namespaces + audit hook), under the audit-hook fallback alone (``hook``: what a caller without
namespaces gets), and, as root, under the kernel layers alone (``audit_hook=False``), so that each
layer is shown to hold by itself.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.rewards.sandbox import (
    SandboxError,
    SandboxResult,
    run_python,
    sandbox_layers,
    sandbox_leftovers,
)

ROOT = os.geteuid() == 0
LAYERS = sandbox_layers()
FAILING = {"error", "timeout", "killed"}
T = 1.0  # wall-clock limit of the hostile programs
SLACK = 3.0  # seconds a call may take beyond its limit (start-up, killing, cleanup; 2 busy cores)

MODES = [pytest.param({"isolation": "auto"}, id="auto"), pytest.param({"isolation": "hook"}, id="hook")]
needs_full = pytest.mark.skipif(
    LAYERS["mode"] != "full", reason=f"namespaces unavailable here: {LAYERS['failures']}"
)


def _run(src: str, mode: dict, **kw) -> SandboxResult:
    kw.setdefault("timeout", T)
    t0 = time.monotonic()
    res = run_python(src, **mode, **kw)
    assert time.monotonic() - t0 < kw["timeout"] + SLACK, "the call overran its limit"
    assert res.wall_s < kw["timeout"] + SLACK
    if ROOT:  # no live process of a sandbox uid whose slot is free
        assert sandbox_leftovers() == [], "sandbox processes left behind"
    return res


@pytest.fixture
def victim():
    """A process of the caller's that the program will try to kill."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1; the test checks it never gets a connection."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv
    srv.close()


def _no_connection(srv: socket.socket) -> bool:
    readable, _, _ = select.select([srv], [], [], 0.2)
    return not readable


# --------------------------------------------------------------------------- normal programs


def test_layers_reported():
    assert LAYERS["mode"] in {"full", "drop", "hook"}
    assert LAYERS["audit_hook"] and LAYERS["rlimits"]
    if ROOT:  # CI: a container where root may create namespaces
        assert LAYERS["drop_privileges"]


@pytest.mark.parametrize("mode", MODES)
def test_normal_program_succeeds(mode):
    src = "import sys, math, json\nx = sys.stdin.read()\nprint(x.upper(), math.factorial(5))\n"
    res = _run(src, mode, stdin="hello", timeout=10)
    assert res.status == "ok" and res.returncode == 0 and res.reason == ""
    assert res.stdout == "HELLO 120\n" and res.stderr == ""


def test_exit_code_and_stderr():
    res = _run("import sys\nsys.stderr.write('bad thing')\nsys.exit(3)", {}, timeout=10)
    assert (res.status, res.returncode, res.reason) == ("error", 3, "exit 3")
    assert res.stderr == "bad thing"
    res = _run("raise ValueError('nope')", {}, timeout=10)
    assert res.status == "error" and "ValueError: nope" in res.stderr


def test_large_stdin_and_output_do_not_deadlock():
    data = "x" * 2_000_000
    res = _run(
        "import sys\nd = sys.stdin.read()\nprint(len(d))\nprint('y' * 50000)", {}, stdin=data, timeout=10
    )
    assert res.status == "ok"
    assert res.stdout.splitlines()[0] == "2000000" and len(res.stdout) == 8 + 50001


def test_working_directory_is_private_writable_and_deleted():
    src = (
        "import os\nopen('f.txt', 'w').write('hi')\nos.mkdir('d')\nopen(os.devnull, 'w').write('x')\n"
        "print(os.getcwd(), sorted(os.listdir('.')))"
    )
    res = _run(src, {}, timeout=10)
    assert res.status == "ok"
    cwd, listing = res.stdout.split(" ", 1)
    assert listing.strip() == "['d', 'f.txt']"
    assert not os.path.exists(cwd), "the working directory must be deleted after the call"


def test_cpu_limit_gives_timeout():
    res = _run("while True:\n    pass", {}, timeout=30, cpu_s=1)  # 1 CPU second comes first
    assert res.status == "timeout" and "SIGXCPU" in res.reason


def test_file_size_limit():
    res = _run("open('big', 'wb').write(b'0' * (3 << 20))", {}, timeout=10, fsize_mb=1)
    assert res.status == "error" and "File too large" in res.stderr


@pytest.mark.skipif(not ROOT, reason="RLIMIT_NPROC applies to a separate uid only (root caller)")
def test_process_limit_caps_threads():
    src = (
        "import threading, time\nts = []\nfor i in range(100):\n"
        "    t = threading.Thread(target=time.sleep, args=(0.5,)); t.start(); ts.append(t)\n"
    )
    res = _run(src, {}, timeout=10, nproc=16)
    assert res.status == "error" and "can't start new thread" in res.stderr


def test_parallel_calls_from_threads():
    def one(i: int) -> SandboxResult:
        return run_python(f"print({i} * {i})", timeout=10)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(16)]
    if ROOT:
        assert sandbox_leftovers() == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="timeout"):
        run_python("pass", timeout=0)
    with pytest.raises(ValueError, match="isolation"):
        run_python("pass", isolation="none")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source"):
        run_python(b"pass")  # type: ignore[arg-type]
    if not ROOT:
        with pytest.raises(SandboxError, match="root"):
            run_python("pass", isolation="drop")


# --------------------------------------------------------------------------- hostile programs


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop(mode):
    res = _run("while True:\n    pass", mode)
    assert res.status == "timeout"


@pytest.mark.parametrize("mode", MODES)
def test_sleep_past_timeout(mode):
    res = _run("import time\ntime.sleep(60)\nprint('woke')", mode)
    assert res.status == "timeout" and "woke" not in res.stdout


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb(mode):
    src = "import os\nwhile True:\n    os.fork()"
    res = _run(src, mode)
    assert res.status in FAILING


@pytest.mark.parametrize("mode", MODES)
def test_memory_bomb(mode):
    # the memory cap is under test, not the clock: on CI's two loaded cores the isolated start-up
    # alone (a uid, namespaces, the interpreter) has taken longer than T, so this program gets a
    # generous wall-clock limit; 100 MB a step reaches the 256 MB cap in three allocations
    res = _run(
        "x = []\nwhile True:\n    x.append(bytearray(10 ** 8))", mode, memory_mb=256, timeout=20.0
    )
    assert res.status == "error" and "MemoryError" in res.stderr


@pytest.mark.parametrize("mode", MODES)
def test_write_outside_sandbox(mode, tmp_path):
    name = f"/tmp/rlvr-sandbox-escape-{uuid.uuid4().hex}"
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chmod(owned, 0o777)  # even a directory anyone may write to stays untouched
    for target in (name, str(owned / "pwned"), "/tmp/../tmp/" + os.path.basename(name) + "x"):
        res = _run(f"open({target!r}, 'w').write('pwned')", mode)
        assert res.status == "error"
    assert not os.path.exists(name) and not os.path.exists(name + "x")
    assert list(owned.iterdir()) == []


@pytest.mark.parametrize("mode", MODES)
def test_read_user_files(mode, tmp_path):
    secret = tmp_path / "home" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-42")
    os.chmod(secret, 0o600)
    res = _run(f"print(open({str(secret)!r}).read())", mode)
    assert res.status == "error" and "TOP-SECRET-42" not in res.stdout + res.stderr
    res = _run("import os\nprint(os.listdir('/root'))", mode)
    assert res.status == "error"


@pytest.mark.parametrize("mode", MODES)
def test_socket_to_local_listener(mode, listener):
    port = listener.getsockname()[1]
    src = (
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
        "print('connected')"
    )
    res = _run(src, mode)
    assert res.status == "error" and "connected" not in res.stdout
    assert _no_connection(listener)


@pytest.mark.parametrize("mode", MODES)
def test_spawn_shell(mode, tmp_path):
    flag = tmp_path / "shell-ran"
    os.chmod(tmp_path, 0o777)
    for src in (
        f"import os\nos.system('touch {flag}')",
        f"import subprocess\nsubprocess.run(['sh', '-c', 'touch {flag}'])",
        f"import os\nos.execv('/bin/sh', ['sh', '-c', 'touch {flag}'])",
        f"import pty\npty.spawn(['/bin/sh', '-c', 'touch {flag}'])",
    ):
        res = _run(src, mode)
        assert res.status in FAILING, src
    assert not flag.exists()


@pytest.mark.parametrize("mode", MODES)
def test_huge_output(mode):
    res = _run(
        "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)", mode, timeout=5
    )
    assert res.status == "killed" and "output limit" in res.reason
    assert len(res.stdout) <= 64_000 and res.wall_s < 3


@pytest.mark.parametrize("mode", MODES)
def test_kill_parent(mode, victim):
    src = (
        "import os, signal\n"
        f"for pid in (os.getppid(), {os.getpid()}, {victim.pid}):\n"
        "    os.kill(pid, signal.SIGKILL)\n"
    )
    res = _run(src, mode)
    assert res.status in FAILING
    assert victim.poll() is None, "a process of the caller was killed"
    os.kill(os.getpid(), 0)  # we are alive


@pytest.mark.parametrize("mode", MODES)
def test_ctypes_escape(mode, tmp_path):
    flag = tmp_path / "ctypes-ran"
    src = f"import ctypes\nlibc = ctypes.CDLL(None)\nlibc.system(b'touch {flag}')"
    res = _run(src, mode)
    assert res.status == "error" and not flag.exists()


@pytest.mark.parametrize("mode", MODES)
def test_escape_through_dir_fd_and_links(mode, tmp_path):
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "via-link"
    for src in (
        f"import os\nos.symlink({str(tmp_path)!r}, 'l')\nopen('l/via-link', 'w').write('x')",
        f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
        "os.close(os.open('via-link', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
        f"import os\nos.mkdir('a')\nos.chdir('a')\nopen('../../{tmp_path.name}/via-link', 'w')",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')",
    ):
        res = _run(src, mode)
        assert res.status == "error", src
    assert not target.exists()


@pytest.mark.skipif(not ROOT, reason="killing leftover processes by uid needs a root caller")
@pytest.mark.parametrize("isolation", [pytest.param("full", marks=needs_full), "drop"])
def test_daemon_left_behind_is_killed(isolation):
    """Without the hook a program can fork a daemon in a new session; it must not survive."""
    src = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')"
    )
    res = _run(src, {"isolation": isolation, "audit_hook": False})  # _run: no survivor of the uid
    # full: the pid namespace dies with its pid 1; drop: the daemon holds the pipes, so it is killed
    assert res.status == ("ok" if isolation == "full" else "killed")


# --------------------------------------------------------------------------- kernel layers alone


@needs_full
@pytest.mark.skipif(not ROOT, reason="a separate uid needs a root caller")
def test_kernel_layers_hold_without_audit_hook(tmp_path, listener, victim):
    """Namespaces + a separate uid, no audit hook: the same attacks still do no harm."""
    mode = {"isolation": "full", "audit_hook": False}
    port = listener.getsockname()[1]
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-42")
    os.chmod(secret, 0o600)
    escape = f"/tmp/rlvr-sandbox-escape-{uuid.uuid4().hex}"
    flag = tmp_path / "shell-ran"
    os.chmod(tmp_path, 0o777)
    cases = {
        "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5)",
        "read": f"print(open({str(secret)!r}).read())",
        "write_owned": f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",
        "kill": f"import os\nfor p in ({os.getpid()}, {victim.pid}):\n    os.kill(p, 9)",
        "ctypes": "import ctypes\nctypes.CDLL(None).kill("
        + str(victim.pid)
        + ", 9)\nraise SystemExit(1)",
    }
    for name, src in cases.items():
        res = _run(src, mode)
        assert res.status in FAILING, name
        assert "TOP-SECRET" not in res.stdout + res.stderr
    # writes to /tmp land in a private tmpfs that vanishes; a shell runs but only inside the sandbox
    res = _run(f"open({escape!r}, 'w').write('x')\nimport os\nos.system('touch {flag}')", mode)
    assert not os.path.exists(escape) and not flag.exists()
    res = _run("import os\nwhile True:\n    os.fork()", mode)  # RLIMIT_NPROC, then the pid namespace
    assert res.status in FAILING
    assert _no_connection(listener) and victim.poll() is None
    assert not (tmp_path / "pwned").exists()


@needs_full
def test_network_namespace_has_no_route():
    src = (
        "import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', 9))\n"
        "except OSError as e:\n    print(e.errno)\n"
    )
    res = _run(src, {"isolation": "full", "audit_hook": False}, timeout=10)
    assert res.status == "ok" and res.stdout.strip() == "101"  # ENETUNREACH: no interface is up


def test_timeout_kills_process_group_without_pid_namespace():
    """Without namespaces a killed program's children die too (process group, then uid)."""
    if ROOT:
        res = _run(
            "import os, time\nos.fork()\ntime.sleep(60)", {"isolation": "drop", "audit_hook": False}
        )
        assert res.status == "timeout"
    else:
        res = _run("import time\ntime.sleep(60)", {"isolation": "hook"})
        assert res.status == "timeout"


def test_signal_status():
    res = _run("import ctypes\nctypes.string_at(0)", {"audit_hook": False}, timeout=10)
    assert res.status == "killed" and res.returncode == -signal.SIGSEGV and "SIGSEGV" in res.reason


def test_program_cannot_fake_setup_failure():
    res = _run("import os\nos._exit(125)", {}, timeout=10)
    assert (res.status, res.returncode) == ("error", 125)


def test_threads_do_not_break_the_hook():
    src = (
        "import threading\nout = []\n"
        "def f():\n    try:\n        open('/etc/passwd_x', 'w')\n    except PermissionError:\n"
        "        out.append(1)\n"
        "ts = [threading.Thread(target=f) for _ in range(4)]\n[t.start() for t in ts]\n"
        "[t.join() for t in ts]\nprint(sum(out))"
    )
    res = _run(src, {"isolation": "hook"}, timeout=10)
    assert res.status == "ok" and res.stdout.strip() == "4"
    assert threading.active_count() >= 1


def test_site_packages_on_request():
    res = _run("import numpy\nprint(numpy.arange(5).sum())", {}, timeout=20, site=True)
    assert res.status == "ok" and res.stdout == "10\n"
    res = _run("import numpy", {}, timeout=10)  # the standard library only, by default
    assert res.status == "error" and "No module named 'numpy'" in res.stderr


@pytest.mark.skipif(not ROOT, reason="sandbox uids are used by root callers only")
def test_uid_slots_are_exclusive_and_leftovers_are_seen():
    from rlvr.rewards import sandbox

    with sandbox._uid_slot(True) as a, sandbox._uid_slot(True) as b:
        assert a != b and min(a, b) >= sandbox.SANDBOX_UID_BASE
        argv = ["setpriv", f"--reuid={a}", f"--regid={a}", "--clear-groups", "sleep", "30"]
        child = subprocess.Popen(argv)
        time.sleep(0.2)
        assert child.pid not in sandbox_leftovers()  # its slot is held: a call is running
    try:
        assert child.pid in sandbox_leftovers()  # the slot is free: the process was left behind
    finally:
        child.kill()
        child.wait()
    assert sandbox_leftovers() == []


def test_bootstrap_is_a_standard_library_file_run_by_path():
    import ast

    from rlvr.rewards import sandbox, sandbox_child  # importing the bootstrap runs nothing

    assert callable(sandbox_child._setup)
    assert os.path.abspath(sandbox_child.__file__) == sandbox._CHILD and os.path.isabs(sandbox._CHILD)
    with open(sandbox._CHILD) as f:
        tree = ast.parse(f.read())
    nodes = list(ast.walk(tree))
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in nodes)  # no relative import
    names = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
    assert names and names <= sys.stdlib_module_names, names - sys.stdlib_module_names
    res = _run(
        "import sys\nprint(sorted(m for m in sys.modules if m.startswith('rlvr')))", {}, timeout=10
    )
    assert res.status == "ok" and res.stdout == "[]\n"


def test_replacing_builtins_does_not_blind_the_hook(tmp_path):
    """The hook binds every builtin it calls before the program runs: a program that replaces
    ``len``, ``bool``, ``any`` or ``repr`` in ``builtins`` is still refused a path outside."""
    victim = tmp_path / "keep.txt"
    victim.write_text("x")
    tmp_path.chmod(0o777)
    src = (
        "import builtins, os\n"
        "builtins.len = lambda x: 0\nbuiltins.bool = lambda x: False\n"
        "builtins.any = lambda x: False\nbuiltins.repr = lambda x: ''\n"
        f"try:\n    os.remove({str(victim)!r})\n    print('removed')\n"
        "except PermissionError as e:\n    print('refused')\n"
        f"try:\n    open({str(tmp_path / 'new.txt')!r}, 'w')\n    print('written')\n"
        "except PermissionError:\n    print('refused')\n"
    )
    res = _run(src, {"isolation": "hook"}, timeout=10)
    assert res.stdout.split() == ["refused", "refused"], res.stdout + res.stderr
    assert victim.exists() and not (tmp_path / "new.txt").exists()
