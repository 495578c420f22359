"""The sandbox's bootstrap: trusted code that runs first in the child process of
:func:`rlvr.rewards.sandbox.run_python`.

:mod:`rlvr.rewards.sandbox` runs this file by path, ``python -I -B -S sandbox_child.py key=value ...``
(``-S`` dropped when ``site=True``), so it must import nothing but the standard library: site-packages
are off, and nothing of rlvr (or torch) may load in the child. As root when the caller is root, it sets
the layers up (namespaces, mounts, resource limits), drops privileges, installs the audit hook, reports
``ok`` on the status pipe and then runs the program as ``__main__``.

Arguments: ``key=value`` strings (see ``run_python``). The program comes on fd 0 as
``b"<length>\\n<source>"``, followed by the program's own stdin. A setup failure writes ``E:<why>`` on
the status pipe and exits with 125.

Importing this module runs nothing; only ``__main__`` does.
"""

import os
import sys


def _setup(argv: list[str]) -> tuple[object, dict[str, object]]:
    """Set the layers up as ``argv`` (``key=value`` strings) says; return the program's code object
    and the globals of its ``__main__``. Exits with 125 after writing ``E:<why>`` when a step fails."""
    import _ctypes
    import posix
    import resource
    import signal
    import types

    cfg = dict(a.partition("=")[::2] for a in argv)
    status = int(cfg["status"])

    class c_int(_ctypes._SimpleCData):  # the C calls below, without the (slow to import) ctypes
        _type_ = "i"

    class Libc:
        _handle = _ctypes.dlopen(None, 0)

    class Fn(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = c_int

    class libc:
        unshare, mount, prctl = Fn(("unshare", Libc)), Fn(("mount", Libc)), Fn(("prctl", Libc))

    def fail(msg):
        try:
            os.write(status, ("E:" + msg).encode("utf-8", "replace")[:4000])
        finally:
            os._exit(125)

    def check(rc, what):
        if rc != 0:
            fail(what + ": " + os.strerror(_ctypes.get_errno()))

    def prctl(option, value):
        check(libc.prctl(option, value, 0, 0, 0), f"prctl {option}")

    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the thread that started us

    head = b""
    while not head.endswith(b"\n"):
        c = os.read(0, 1)
        if not c:
            fail("no program on stdin")
        head += c
    size, parts, got = int(head), [], 0
    while got < size:
        c = os.read(0, min(1 << 20, size - got))
        if not c:
            fail("program truncated")
        parts.append(c)
        got += len(c)
    source = b"".join(parts).decode("utf-8")

    uid, gid, work = int(cfg["uid"]), int(cfg["gid"]), cfg["work"]
    ns = set(filter(None, cfg["ns"].split(",")))
    nproc = int(cfg["nproc"])
    if uid < 0 and os.geteuid() != 0 and "user" not in ns:
        # the caller's own uid: RLIMIT_NPROC counts all of the caller's tasks, so allow nproc more
        me = os.geteuid()
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and os.stat("/proc/" + d).st_uid == me:
                    nproc += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    mb = 1 << 20
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
    # directories Python reads at run time (stdlib, site-packages), computed before anything is hidden
    pyroots = []
    for p in [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]:
        if p and os.path.isdir(p):
            for q in (os.path.abspath(p), os.path.realpath(p)):
                if q not in pyroots:
                    pyroots.append(q)

    def mount(src, target, fstype, flags, data):
        def enc(s):
            return None if s is None else s.encode()

        check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")

    def under(path, top):
        return path == top or path.startswith(top.rstrip("/") + "/")

    def keep_flags(path):  # MS_* flags of a mount that a read-only remount must keep
        f = os.statvfs(path).f_flag
        out = 0
        for st, ms in (
            (2, MS_NOSUID),
            (4, MS_NODEV),
            (8, MS_NOEXEC),
            (1024, 1024),
            (2048, 2048),
            (4096, 1 << 21),
        ):
            if f & st:
                out |= ms
        return out

    if ns:
        bits = {
            "user": 0x10000000,
            "net": 0x40000000,
            "mnt": 0x00020000,
            "pid": 0x20000000,
            "ipc": 0x08000000,
            "uts": 0x04000000,
        }
        flags = 0
        for name in ns:
            flags |= bits[name]
        myuid, mygid = os.geteuid(), os.getegid()
        check(libc.unshare(flags), "unshare " + ",".join(sorted(ns)))
        if "user" in ns:
            for name, text in (
                ("setgroups", "deny"),
                ("uid_map", f"{myuid} {myuid} 1"),
                ("gid_map", f"{mygid} {mygid} 1"),
            ):
                with open("/proc/self/" + name, "w") as f:
                    f.write(text)
    if "mnt" in ns:
        size = f"size={int(cfg['tmpfs_mb'])}m"
        mount(None, "/", None, MS_REC | MS_PRIVATE, None)

        def real_dir(d):
            return d and os.path.isdir(d) and not os.path.islink(d)

        hidden = [d for d in cfg["hide"].split(":") if real_dir(d)]
        private = [d for d in cfg["tmp"].split(":") if real_dir(d)]
        # Python directories under a directory that gets covered are bound back, read-only
        expose = sorted({p for p in pyroots for d in hidden + private if under(p, d)})
        fds = {p: os.open(p, os.O_RDONLY | os.O_DIRECTORY) for p in expose}
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].encode().decode("unicode_escape")
                if not any(under(mp, top) for top in ("/proc", "/sys", "/dev")):
                    points.append(mp)
        for mp in points:  # every mount read-only; one that refuses is hidden instead
            try:
                flags = keep_flags(mp)
            except OSError:
                continue
            if libc.mount(None, mp.encode(), None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None) != 0:
                mount("tmpfs", mp, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=1m,mode=0755")
        for d in private:
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=1777")
        for d in hidden:
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        old = os.umask(0o022)
        for p in expose:
            os.makedirs(p, exist_ok=True)
            mount(f"/proc/self/fd/{fds[p]}", p, None, MS_BIND | MS_REC, None)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep_flags(p), None)
            os.close(fds[p])
        os.umask(old)
        os.makedirs(work, exist_ok=True)
        owner = f",uid={uid},gid={gid}" if uid >= 0 else ""
        mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV, size + ",mode=0700" + owner)
    if "pid" in ns:
        # pid 1 of the new namespace only holds it open: when it dies, the kernel kills every process
        # left in it. The program is pid 2, so that signals (SIGXCPU, ...) act on it as usual.
        init = os.fork()
        if init == 0:
            prctl(1, signal.SIGKILL)
            os.close(status)
            while True:
                signal.pause()
        pid = os.fork()
        if pid:  # the bootstrap waits for the program, ends the namespace and exits as it did
            os.close(status)
            signal.alarm(int(cfg["alarm"]))  # backstop: if nobody kills us, die (and pid 1 with us)
            while True:
                try:
                    _, st = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
            os.kill(init, signal.SIGKILL)
            os.waitpid(init, 0)
            if os.WIFSIGNALED(st):
                sig = os.WTERMSIG(st)
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                try:  # noqa: SIM105 - the bootstrap does not import contextlib
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
                os.kill(os.getpid(), sig)
                os._exit(128 + sig)
            os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)
        if "mnt" in ns:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)

    cpu = int(cfg["cpu"])
    limits = [
        (resource.RLIMIT_AS, int(cfg["as_mb"]) * mb),
        (resource.RLIMIT_FSIZE, int(cfg["fsize_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(cfg["nofile"])),
        (resource.RLIMIT_CORE, 0),
    ]
    for what, value in limits:
        resource.setrlimit(what, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if uid >= 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getuid() != uid or os.geteuid() != uid:
            fail("could not drop privileges")
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    prctl(1, signal.SIGKILL)  # changing credentials cleared the parent-death signal
    os.chdir(work)
    os.umask(0o077)

    if cfg["hook"] == "1":
        _install_hook(work, pyroots)
    for mod in (os, posix, signal, sys.modules.get("_signal")):
        for name in ("mkfifo", "mknod", "pidfd_open", "pidfd_send_signal"):
            if mod is not None and name in mod.__dict__:
                delattr(mod, name)
    for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
        del sys.modules[name]
    os.write(status, b"ok")
    os.close(status)
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = ["<program>"]
    return compile(source, "<program>", "exec"), main.__dict__


def _install_hook(work: str, pyroots: list[str]) -> None:
    """The audit hook. Everything it calls is bound here, before the program runs, so that the
    program cannot change what the hook does by replacing module attributes."""
    import posix

    str_, bytes_, int_, type_ = str, bytes, int, type
    # every builtin the hook calls: the program can replace builtins.len & co. but not these names
    len_, bool_, any_, repr_ = len, bool, any, repr
    PermissionError_, ImportError_ = PermissionError, ImportError
    W = work.rstrip("/")
    roots = tuple(r.rstrip("/") + "/" for r in [*pyroots, W, "/usr/share/zoneinfo"] if r != "/")
    files = frozenset(["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/etc/localtime"])
    sinks = frozenset(["/dev/null"])  # files outside W that may be opened for writing
    # fmt: off
    deny = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
            "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "pty.", "ctypes.",
            "resource.setrlimit", "resource.prlimit", "os.symlink", "os.link", "os.startfile",
            "sqlite3.", "cpython.PyInterpreterState_New", "code.__new__", "winreg.", "_winapi.",
            "msvcrt.", "os.chroot", "os.setns", "os.unshare", "fcntl.ioctl")
    blocked = frozenset(["ctypes", "_ctypes", "_posixsubprocess", "_sqlite3", "sqlite3", "_dbm",
                         "dbm.ndbm", "_gdbm", "dbm.gnu", "readline", "_curses", "_curses_panel",
                         "_tkinter", "_posixshmem", "_multiprocessing", "_xxsubinterpreters",
                         "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
                         "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple",
                         "_testmultiphase", "_xxtestfuzz", "_testsinglephase", "_testclinic"])
    O_WRITE = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    # event -> (kind, indices of path arguments)
    rules = {
        "os.remove": ("w", (0,)), "os.rmdir": ("w", (0,)), "os.rename": ("w", (0, 1)),
        "os.mkdir": ("w", (0,)), "os.chmod": ("w", (0,)), "os.chown": ("w", (0,)),
        "os.utime": ("w", (0,)), "os.truncate": ("w", (0,)), "os.setxattr": ("w", (0,)),
        "os.removexattr": ("w", (0,)), "os.chflags": ("w", (0,)), "os.lchflags": ("w", (0,)),
        "os.listdir": ("r", (0,)), "os.scandir": ("r", (0,)), "glob.glob": ("r", (0,)),
        "os.listxattr": ("r", (0,)), "os.getxattr": ("r", (0,)), "os.chdir": ("w", (0,)),
    }
    # fmt: on

    def refuse(event, why):
        raise PermissionError_(f"sandbox: {event} refused ({why})")

    def show(path):  # never calls the program's code (a path object's __repr__)
        return repr_(path) if type_(path) in (str_, bytes_, int_) else "(not a str or bytes path)"

    def allowed(path, write):
        if path is None:
            return True
        t = type_(path)
        if t is int_:
            return True  # an open file descriptor, obtained through a checked open
        if t is bytes_:
            path = path.decode("utf-8", "surrogateescape")
        elif t is not str_:
            return False
        parts = path.split("/")
        if not path.startswith("/"):
            # the working directory and every directory fd are inside W; without ".." a relative
            # path stays below them (there are no symlinks in W: the hook refuses creating them)
            return ".." not in parts
        out = []
        for p in parts:
            if p == "..":
                if out:
                    out.pop()
            elif p and p != ".":
                out.append(p)
        norm = "/" + "/".join(out)
        if norm == W or norm.startswith(W + "/"):
            return True
        if write:
            return norm in sinks
        return norm in files or (norm + "/").startswith(roots)

    def hook(event, args):
        rule = rules.get(event)
        if rule is not None:
            kind, idx = rule
            for i in idx:
                if i < len_(args) and not allowed(args[i], kind == "w"):
                    refuse(event, f"path {show(args[i])} is outside the sandbox")
            return
        if event == "open":
            path, mode, flags = args
            if mode is None:  # os.open: any fd, directories included, only inside the sandbox
                write = True
            else:
                write = (type_(flags) is int_ and flags & O_WRITE) or any_(c in mode for c in "wax+")
            if not allowed(path, bool_(write)):
                refuse(event, f"path {show(path)} is outside the sandbox")
            return
        if event == "import":
            if args[0] in blocked:  # an ImportError, so that "try: import x except ImportError" works
                raise ImportError_(f"sandbox: import of module {args[0]!r} refused")
            return
        if event.startswith(deny):
            refuse(event, "not allowed in the sandbox")

    sys.addaudithook(hook)


if __name__ == "__main__":
    _code, _globals = _setup(sys.argv[1:])
    del _setup, _install_hook
    exec(_code, _globals)
