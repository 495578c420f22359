"""Running untrusted Python: one short-lived, locked-down process per call (Linux).

:func:`run_python` runs a program in a fresh interpreter (``python -I -B -S``; ``site=True`` drops
``-S``) with an empty environment apart from ``PATH``/``HOME``/``TMPDIR``/``LANG``, in its own session
and process group, and returns a :class:`SandboxResult`. It is safe to call from several threads and
processes at once. The guarantees come from independent layers, so that each still holds when
another is missing:

====================  =====================================================================  ==========
layer                 what it guarantees                                                     needs
====================  =====================================================================  ==========
process group         wall-clock timeout kills the whole group (``killpg``); the sandbox       always
                      dies with the thread that started it (``PR_SET_PDEATHSIG``)
resource limits       CPU seconds, address space (memory), file size, processes, open files   always
                      (``setrlimit``); output read with a size cap (no pipe deadlock)
private directory     a fresh temporary working directory, deleted afterwards                 always
unprivileged user     the program runs as a uid/gid of its own (62000 + a slot held with       root
                      ``flock``, unique on the machine; no groups; ``no_new_privs``): it
                      cannot read 0600 files of root, signal the caller or other
                      sandboxes; ``RLIMIT_NPROC`` applies (it does not to root); any process
                      of that uid still alive after the call is killed
network namespace     no interface but a downed loopback: no network at all, not even the     root or
                      host's 127.0.0.1                                                        userns
mount namespace       every mount read-only; the working directory is a size-limited tmpfs;   root or
                      private tmpfs on /tmp, /var/tmp, /dev/shm, /run/lock; /root, /home and  userns
                      /run/user hidden (the Python installation bound back read-only); a
                      fresh /proc. Nothing the program writes reaches the host.
pid namespace         the program runs in a pid namespace of its own: when it ends, every     root or
                      process it started is killed by the kernel                              userns
audit hook            refuses (``PermissionError``) sockets, subprocess/exec/spawn/system/     always
                      fork, ``os.kill``/``killpg``, sub-interpreters, hand-built code
                      objects, ``open()`` for writing outside the working directory, reading
                      outside it and the Python installation, symlinks and hard links;
                      refuses (``ImportError``) ctypes and C modules that open files or start
                      processes themselves (sqlite3, dbm, readline, _posixsubprocess, ...)
====================  =====================================================================  ==========

A root caller (CI) gets every layer. A non-root caller gets the namespaces through a user namespace
(``unshare(CLONE_NEWUSER | ...)``) where the kernel allows it, but the program keeps the caller's uid
there: the caller's own files outside the hidden directories are then protected by the audit hook
alone, and so is everything when the kernel has no user namespaces. :func:`sandbox_layers` says which
layers this machine gives; the first call probes them once.

The audit hook (PEP 578) is a second layer, not a boundary on its own: a program that corrupts the
interpreter's memory could disable it. A few C functions without audit events (``os.mkfifo``,
``os.mknod``, ``signal.pidfd_send_signal``) are removed from their modules, which a determined program
can undo. Paths given as ``pathlib.Path`` objects are refused by the hook (an object could change
between the check and the use): programs in the sandbox use ``str`` paths.

Status of a result: ``ok`` (exit 0), ``error`` (non-zero exit, e.g. an exception or a refused
operation), ``timeout`` (wall clock or CPU time exceeded) or ``killed`` (a signal, or more than
``max_output`` bytes written to stdout or stderr).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import selectors
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "SANDBOX_UID_BASE",
    "SANDBOX_UID_SLOTS",
    "SandboxError",
    "SandboxResult",
    "run_python",
    "sandbox_layers",
    "sandbox_leftovers",
]

SANDBOX_UID_BASE = 62000  # uid (and gid) of slot k is SANDBOX_UID_BASE + k (root callers only)
SANDBOX_UID_SLOTS = 1024  # at most this many sandboxes at once on the machine
_NOFILE = 128  # RLIMIT_NOFILE of the program
_SETUP_FAILED = 125  # exit code of a bootstrap whose setup failed (the status pipe says why)
_HIDE = ("/root", "/home", "/run/user")  # hidden behind an empty tmpfs in the mount namespace
_PRIVATE_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # private tmpfs in the mount namespace

Isolation = Literal["auto", "full", "drop", "hook"]


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up (not a failure of the program it runs)."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one :func:`run_python` call.

    ``status``: ``ok`` | ``error`` | ``timeout`` | ``killed``; ``returncode``: the exit code, or
    ``-signal``; ``stdout``/``stderr``: decoded output, each at most ``max_output`` bytes;
    ``wall_s``: wall-clock seconds of the call; ``reason``: why a run did not end with ``ok``
    (``"exit 1"``, ``"wall-clock timeout"``, ``"output limit"``, ``"signal SIGXCPU"``...).
    """

    status: Literal["ok", "error", "timeout", "killed"]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------------------
# The bootstrap: trusted code that runs first in the child, in its own file run by path
# (rlvr/rewards/sandbox_child.py, standard library only), so that the child imports nothing of rlvr
# (or torch). The path is absolute: the child starts in the sandbox's working directory.
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")


# ---------------------------------------------------------------------------------------------------
# parent side
_probe_lock = threading.Lock()
_layers_cache: dict[str, object] | None = None

_FULL_NS_ROOT = "net,mnt,pid,ipc,uts"
_FULL_NS_USER = "user,net,mnt,pid,ipc,uts"


def _is_root() -> bool:
    return os.geteuid() == 0


def _mode_config(mode: str) -> tuple[str, bool]:
    """(namespaces, drop privileges) of an isolation mode on this caller."""
    root = _is_root()
    if mode == "full":
        return (_FULL_NS_ROOT, True) if root else (_FULL_NS_USER, False)
    if mode == "drop":
        if not root:
            raise SandboxError("isolation 'drop' needs a root caller (it switches to another uid)")
        return "", True
    return "", False


def sandbox_layers() -> dict[str, object]:
    """Which layers this machine gives, probed once (about 0.1 s) and cached.

    Returns ``{"mode": "full" | "drop" | "hook", "root": bool, "namespaces": [...],
    "drop_privileges": bool, "audit_hook": True, "rlimits": True, "failures": {mode: why}}``.
    ``mode`` is what ``isolation="auto"`` uses: the first of full, drop (root only), hook whose
    setup works here.
    """
    global _layers_cache
    with _probe_lock:
        if _layers_cache is None:
            failures: dict[str, str] = {}
            chosen = "hook"
            for mode in ("full", "drop") if _is_root() else ("full",):
                try:
                    # a module that is not loaded at start-up: can the dropped uid still import?
                    res = run_python("import fractions\nprint(6 * 7)", timeout=10.0, isolation=mode)
                except SandboxError as err:
                    failures[mode] = str(err)
                    continue
                if res.status == "ok" and res.stdout.strip() == "42":
                    chosen = mode
                    break
                failures[mode] = f"probe program ended with {res.status}: {res.stderr[-500:]}"
            nss, drop = _mode_config(chosen)
            _layers_cache = {
                "mode": chosen,
                "root": _is_root(),
                "namespaces": [n for n in nss.split(",") if n],
                "drop_privileges": drop,
                "audit_hook": True,
                "rlimits": True,
                "failures": failures,
            }
        return dict(_layers_cache)


def _slot_path(slot: int) -> str:
    """Lock file of a uid slot; the directory is root's (0700), in the caller's temp directory."""
    d = os.path.join(tempfile.gettempdir(), "rlvr-sandbox-slots")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.lstat(d)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077 or not os.path.isdir(d) or os.path.islink(d):
        raise SandboxError(f"{d} must be a directory of uid {os.geteuid()} with mode 0700")
    return os.path.join(d, str(slot))


def _open_slot(slot: int) -> int:
    return os.open(_slot_path(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


@contextlib.contextmanager
def _uid_slot(drop: bool) -> Iterator[int]:
    """A uid of its own for one sandbox (root callers), -1 when privileges are not dropped.

    A slot is held with an exclusive ``flock`` on its lock file, so slots are unique across every
    process of the machine (a reward worker pool runs sandboxes in several processes) and a crashed
    holder frees its slot.
    """
    if not drop:
        yield -1
        return
    start = (os.getpid() * 7919 + threading.get_ident()) % SANDBOX_UID_SLOTS
    for k in range(SANDBOX_UID_SLOTS):
        slot = (start + k) % SANDBOX_UID_SLOTS
        fd = _open_slot(slot)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield SANDBOX_UID_BASE + slot
        finally:
            os.close(fd)
        return
    raise SandboxError(f"all {SANDBOX_UID_SLOTS} sandbox uid slots are busy")


def sandbox_leftovers() -> list[int]:
    """Pids of live processes that run as a sandbox uid whose slot no call holds: processes that
    a sandbox left behind. Always empty unless something is wrong (root callers only)."""
    out = []
    for uid in sorted({_uid_of(pid) for pid in _live_sandbox_pids()} - {None}):
        slot = uid - SANDBOX_UID_BASE  # type: ignore[operator]
        fd = _open_slot(slot)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out += _live_pids_of_uid(uid)  # type: ignore[arg-type]
        except BlockingIOError:
            pass  # a call holds the slot: its processes are not left over
        finally:
            os.close(fd)
    return out


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _live_sandbox_pids() -> list[int]:
    lo, hi = SANDBOX_UID_BASE, SANDBOX_UID_BASE + SANDBOX_UID_SLOTS
    return [
        int(d)
        for d in os.listdir("/proc")
        if d.isdigit() and lo <= (_uid_of(int(d)) or -1) < hi and _alive(int(d))
    ]


def _alive(pid: int) -> bool:
    """Not a zombie (a zombie holds nothing but its pid; its parent or init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _live_pids_of_uid(uid: int) -> list[int]:
    """Live (not zombie) processes of ``uid``."""
    return [
        int(d) for d in os.listdir("/proc") if d.isdigit() and _uid_of(int(d)) == uid and _alive(int(d))
    ]


def _kill_uid(uid: int, deadline_s: float = 5.0) -> None:
    """SIGKILL every process of ``uid`` until none is left alive (a sandbox uid serves one call)."""
    end = time.monotonic() + deadline_s
    while pids := _live_pids_of_uid(uid):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > end:
            raise SandboxError(f"processes {pids} of sandbox uid {uid} survive SIGKILL")
        time.sleep(0.002)


def _stop(proc: object, uid: int) -> None:
    """Kill a sandbox: first every process of its uid (so that the bootstrap reaps the program and
    no zombie is left to init), then its process group."""
    if uid >= 0:
        _kill_uid(uid)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]


def _communicate(proc: object, payload: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str]:
    """Feed stdin and read stdout/stderr until EOF, the deadline or ``cap`` bytes on one stream.

    Returns (stdout, stderr, reason) with reason "" (EOF), "timeout", "output" or "orphans" (the
    process ended but something it left behind keeps the pipes open).
    """
    sel = selectors.DefaultSelector()
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()  # type: ignore[attr-defined]
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    for fd in (out_fd, err_fd, in_fd):
        os.set_blocking(fd, False)
    sel.register(out_fd, selectors.EVENT_READ)
    sel.register(err_fd, selectors.EVENT_READ)
    view, pos = memoryview(payload), 0
    sel.register(in_fd, selectors.EVENT_WRITE)
    exited_at: float | None = None
    reason = ""
    try:
        while out_fd in sel.get_map() or err_fd in sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if exited_at is None and proc.poll() is not None:  # type: ignore[attr-defined]
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                reason = "orphans"
                break
            wait = deadline - now if exited_at is None else min(deadline - now, 0.05)
            for key, _ in sel.select(min(wait, 0.25)):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pos += os.write(fd, view[pos : pos + 65536])
                    except BlockingIOError:
                        continue
                    except (BrokenPipeError, OSError):
                        pos = len(view)
                    if pos >= len(view):
                        sel.unregister(fd)
                        proc.stdin.close()  # type: ignore[attr-defined]
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = bufs[fd]
                if len(buf) + len(chunk) > cap:
                    buf += chunk[: cap - len(buf)]
                    reason = "output"
                    break
                buf += chunk
            if reason:
                break
    finally:
        sel.close()
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), reason


def run_python(
    source: str,
    *,
    stdin: str = "",
    timeout: float = 5.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    fsize_mb: int = 16,
    nproc: int = 64,
    max_output: int = 64_000,
    site: bool = False,
    isolation: Isolation = "auto",
    audit_hook: bool = True,
) -> SandboxResult:
    """Run ``source`` as a Python program in the sandbox and return its :class:`SandboxResult`.

    ``timeout``: wall-clock seconds, after which the whole process group (and, for root callers,
    every process of the sandbox's uid) is killed; ``cpu_s``: CPU seconds (default
    ``ceil(timeout) + 1``); ``memory_mb``: address-space limit; ``fsize_mb``: largest file the
    program may write (also the size of its tmpfs working directory, x4); ``nproc``: processes and
    threads; ``max_output``: bytes kept of stdout and of stderr; more on either kills the program
    (status ``killed``). ``site``: make site-packages importable (off: the standard library only).
    ``isolation``: ``auto`` (the strongest this machine gives, see :func:`sandbox_layers`), or force
    ``full``, ``drop`` or ``hook`` (raises :class:`SandboxError` when the layer cannot be set up).
    ``audit_hook=False`` leaves the audit hook out: only for testing what the kernel layers alone
    guarantee.
    """
    if not isinstance(source, str):
        raise TypeError(f"run_python: source must be str, got {type(source).__name__}")
    for name, value, low in (
        ("timeout", timeout, 0.0),
        ("memory_mb", memory_mb, 32),
        ("fsize_mb", fsize_mb, 1),
        ("nproc", nproc, 1),
        ("max_output", max_output, 1),
    ):
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > low - 1e-12:
            raise ValueError(f"run_python: {name} must be a number >= {low}, got {value!r}")
    if timeout <= 0:
        raise ValueError(f"run_python: timeout must be > 0, got {timeout!r}")
    if isolation not in ("auto", "full", "drop", "hook"):
        raise ValueError(
            f"run_python: isolation must be 'auto', 'full', 'drop' or 'hook', got {isolation!r}"
        )
    mode = sandbox_layers()["mode"] if isolation == "auto" else isolation
    nss, drop = _mode_config(str(mode))
    cpu = int(cpu_s) if cpu_s is not None else math.ceil(timeout) + 1
    if cpu < 1:
        raise ValueError(f"run_python: cpu_s must be >= 1, got {cpu_s!r}")

    start = time.monotonic()
    with _uid_slot(drop) as uid:
        work = tempfile.mkdtemp(prefix="rlvr-sbx-")
        proc = None
        status_r = status_w = -1
        try:
            if uid >= 0:
                os.chown(work, uid, uid)
            os.chmod(work, 0o700)
            status_r, status_w = os.pipe()
            cfg = {
                "status": status_w,
                "uid": uid,
                "gid": uid,
                "work": work,
                "ns": nss,
                "hook": int(audit_hook),
                "as_mb": int(memory_mb),
                "cpu": cpu,
                "fsize_mb": int(fsize_mb),
                "nproc": int(nproc),
                "nofile": _NOFILE,
                "tmpfs_mb": max(4 * int(fsize_mb), 16),
                "hide": ":".join(_HIDE),
                "tmp": ":".join(_PRIVATE_TMP),
                "alarm": math.ceil(timeout) + 10,
            }
            argv = [sys.executable, "-I", "-B"] + ([] if site else ["-S"])
            argv += [_CHILD, *(f"{k}={v}" for k, v in cfg.items())]
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": work,
                "TMPDIR": work,
                "LANG": "C.UTF-8",
                "LC_ALL": "C.UTF-8",
            }
            import subprocess  # local: the module is only needed by the parent

            code = source.encode("utf-8")
            payload = b"%d\n" % len(code) + code + stdin.encode("utf-8")
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=work,
                env=env,
                start_new_session=True,
                pass_fds=(status_w,),
            )
            os.close(status_w)
            status_w = -1
            out, err, reason = _communicate(proc, payload, start + timeout, int(max_output))
            if reason or proc.poll() is None:
                _stop(proc, uid)
            rc = proc.wait()
            setup = b""
            with contextlib.suppress(OSError):
                os.set_blocking(status_r, False)
                setup = os.read(status_r, 4096)
        finally:
            if proc is not None and proc.poll() is None:
                _stop(proc, uid)
                proc.wait()
            if proc is not None:
                for f in (proc.stdin, proc.stdout, proc.stderr):
                    with contextlib.suppress(OSError):
                        f.close()  # type: ignore[union-attr]
            for fd in (status_r, status_w):
                if fd >= 0:
                    os.close(fd)
            # a killed bootstrap leaves the namespace to PDEATHSIG; without a pid namespace the
            # program could have forked: either way, nothing of this uid may survive the call
            if uid >= 0:
                _kill_uid(uid)
            shutil.rmtree(work, ignore_errors=True)
    wall = time.monotonic() - start

    if setup.startswith(b"E:"):
        raise SandboxError(
            f"sandbox setup failed (isolation {mode!r}): {setup[2:].decode('utf-8', 'replace')}"
        )
    if setup != b"ok" and reason != "timeout":
        raise SandboxError(
            f"sandbox bootstrap ended before the program started (exit {rc}): "
            f"{err.decode('utf-8', 'replace')[-2000:]}"
        )
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if reason == "timeout":
        status, why = "timeout", f"wall-clock timeout ({timeout:g} s)"
    elif reason == "output":
        status, why = "killed", f"output limit ({max_output} bytes)"
    elif reason == "orphans":
        status, why = "killed", "processes left behind kept the output open"
    elif rc == 0:
        status, why = "ok", ""
    elif rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        status = "timeout" if -rc == signal.SIGXCPU else "killed"
        why = f"signal {name}" + (f" (CPU limit {cpu} s)" if -rc == signal.SIGXCPU else "")
    else:
        status, why = "error", f"exit {rc}"
    return SandboxResult(status, rc, stdout, stderr, wall, why)  # type: ignore[arg-type]
