"""A second PKCS#11 implementation for the tests: tpm2-pkcs11 on a software TPM.

:class:`SoftwareTPM` runs swtpm (TCP on 127.0.0.1 only), a private D-Bus session bus and the
tpm2-abrmd resource manager in a private directory on /dev/shm; nothing touches the system bus
or a real TPM. :class:`TPMTokens` is a tpm2-pkcs11 *store* (an SQLite file) on such a TPM, with
the same interface as ``support.softhsm.SoftHSM`` (``root``, ``env``, ``labels``, ``run()``,
``add_token()``), so token tests can be parametrized over both implementations. The fixtures
(``software_tpm``, ``tpm``, ``tpm_with_softhsm``, ``locking_tpm``, ``session_tpm``) are in
tests/conftest.py.

Facts this relies on are in /work/shared/TOKENS.md; the ones that shaped this file:

* A resource manager is mandatory (swtpm alone has 3 transient slots): abrmd, on a private
  session bus, ``--flush-all --max-transients=100``.
* Wrong PINs trip the TPM's dictionary-attack lockout, which is TPM-wide (every store and token
  on it): the policy is set to 3 tries / 10 s at start and :meth:`SoftwareTPM.clear_lockout`
  resets it. An unclean stop also counts as a failure, hence the orderly :meth:`SoftwareTPM.stop`.
* Stores share the TPM's one persistent primary key (0x81000001): the library reuses it when it
  creates a store on C_InitToken; a plain ``tpm2_ptool init`` would make a new persistent
  object per store (NV space for a handful only), so the fallback passes ``--primary-handle``.
* swtpm ``--daemon`` changes directory to /: every path handed to it must be absolute (a
  relative ``--tpmstate dir`` sends the TPM into failure mode on its first write).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from support.cli import SO_PIN, USER_PIN, cli_env, run_cli
from support.softhsm import SoftHSM

__all__ = [
    "PRIMARY_HANDLE",
    "TPM2_MODULE",
    "SoftwareTPM",
    "TPMError",
    "TPMTokens",
    "make_tpm_tokens",
    "start_software_tpm",
    "tpm_available",
    "tpm_in_process",
]

_MULTIARCH = ("x86_64-linux-gnu", "aarch64-linux-gnu")


def _first_existing(candidates: list[str]) -> str:
    return next((p for p in candidates if Path(p).exists()), candidates[0])


#: The tpm2-pkcs11 module (Debian's libtpm2-pkcs11-1), for this machine's architecture.
TPM2_MODULE = _first_existing([f"/usr/lib/{a}/pkcs11/libtpm2_pkcs11.so" for a in _MULTIARCH])
#: The tabrmd TCTI (libtss2-tcti-tabrmd0): without it no client finds the resource manager.
TABRMD_TCTI = _first_existing([f"/usr/lib/{a}/libtss2-tcti-tabrmd.so.0" for a in _MULTIARCH])
#: The persistent primary key every store on a SoftwareTPM shares (the first one tpm2-pkcs11 makes).
PRIMARY_HANDLE = "0x81000001"
CLIENT_TCTI = "tabrmd:bus_type=session"

_TOOLS = {
    "swtpm": "swtpm",
    "swtpm_ioctl": "swtpm-tools",
    "tpm2-abrmd": "tpm2-abrmd",
    "dbus-daemon": "dbus",
    "tpm2_getcap": "tpm2-tools",
    "tpm2_dictionarylockout": "tpm2-tools",
    "tpm2_shutdown": "tpm2-tools",
    "tpm2_ptool": "libtpm2-pkcs11-tools",
}
# tpm2-abrmd lives in /usr/sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
START_TIMEOUT = 15.0


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def tpm_available() -> tuple[bool, str]:
    """(True, "") when everything a SoftwareTPM needs is installed, else (False, what is missing)."""
    missing = sorted({pkg for tool, pkg in _TOOLS.items() if _which(tool) is None})
    if not Path(TABRMD_TCTI).exists():
        missing.append("libtss2-tcti-tabrmd0")
    if not Path(TPM2_MODULE).exists():
        missing.append("libtpm2-pkcs11-1")
    if missing:
        return False, f"software TPM packages missing: {' '.join(sorted(set(missing)))} (make deps)"
    return True, ""


class TPMError(RuntimeError):
    """The software TPM did not start (or a TPM tool failed); the message has the log tails."""


def _tool(name: str) -> str:
    path = _which(name)
    if path is None:
        raise TPMError(f"{name} not found (package {_TOOLS.get(name, '?')}); run 'make deps'")
    return path


def _free_port_pair() -> int:
    """A port P on 127.0.0.1 such that P and P+1 are both free right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as s1, socket.socket() as s2:
                s1.bind(("127.0.0.1", port))
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise TPMError("no free pair of TCP ports on 127.0.0.1")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _tail(path: Path, n: int = 1500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-n:].strip()


# -- SIGTERM / exit clean-up ---------------------------------------------------------------
# A session killed by a CI timeout (SIGTERM) would otherwise leave swtpm, abrmd and a
# dbus-daemon running: swtpm and dbus-daemon are daemons, not children pytest reaps.
_LIVE: list[SoftwareTPM] = []
_LIVE_LOCK = threading.Lock()
_previous_handler: Any = None
_handler_installed = False


def _on_sigterm(signum: int, frame: Any) -> None:
    previous = _previous_handler  # stop() below uninstalls this handler with the last TPM
    for tpm in list(_LIVE):
        with contextlib.suppress(Exception):
            tpm.stop()
    _uninstall_handler()
    if callable(previous):
        previous(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handler() -> None:
    global _previous_handler, _handler_installed
    if _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    _previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    _handler_installed = True


def _uninstall_handler() -> None:
    global _previous_handler, _handler_installed
    if not _handler_installed or threading.current_thread() is not threading.main_thread():
        return
    # Put the previous handler back only if nobody replaced ours in the meantime.
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, _previous_handler if _previous_handler is not None else signal.SIG_DFL)
    _previous_handler = None
    _handler_installed = False


def _register(tpm: SoftwareTPM) -> None:
    with _LIVE_LOCK:
        _LIVE.append(tpm)
        _install_handler()


def _unregister(tpm: SoftwareTPM) -> None:
    with _LIVE_LOCK:
        if tpm in _LIVE:
            _LIVE.remove(tpm)
        if not _LIVE:
            _uninstall_handler()


@atexit.register
def _stop_all_at_exit() -> None:
    for tpm in list(_LIVE):
        with contextlib.suppress(Exception):
            tpm.stop()


class SoftwareTPM:
    """swtpm + a private dbus-daemon + tpm2-abrmd, in a private directory on /dev/shm.

    ``start()`` (or ``with SoftwareTPM() as tpm:``) brings all three up and sets the lockout
    policy (3 tries, 10 s recovery); ``stop()`` shuts the TPM down cleanly and removes
    everything. ``client_env`` is what a PKCS#11 client needs (plus TPM2_PKCS11_STORE).
    """

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or (Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()))
        self.dir: Path | None = None
        self.port = 0
        self.timings: dict[str, float] = {}
        self._swtpm_pid: int | None = None
        self._dbus_pid: int | None = None
        self._abrmd: subprocess.Popen[bytes] | None = None
        self._abrmd_log: Any = None

    # -- environments ------------------------------------------------------------------------
    @property
    def ctrl_port(self) -> int:
        return self.port + 1

    @property
    def bus_address(self) -> str:
        assert self.dir is not None, "SoftwareTPM not started"
        return f"unix:path={self.dir / 'dbus.sock'}"

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for tpm2-pkcs11 clients (TPM2_PKCS11_STORE is per store: TPMTokens sets it)."""
        return {
            "TPM2_PKCS11_TCTI": CLIENT_TCTI,
            "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
            "TPM2_PKCS11_LOG_LEVEL": "0",
            "TSS2_LOG": "all+NONE",
        }

    @property
    def tools_env(self) -> dict[str, str]:
        """os.environ plus what tpm2-tools and tpm2_ptool need to reach this TPM through abrmd."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TPM2", "TSS2_"))}
        env.update(self.client_env)
        env["TPM2TOOLS_TCTI"] = CLIENT_TCTI
        return env

    def tool(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a tpm2-tools / tpm2_ptool command against this TPM."""
        cmd = [_tool(args[0]), *args[1:]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=self.tools_env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise TPMError(f"{' '.join(args)} timed out after {timeout} s{self._logs()}") from e
        if check and proc.returncode != 0:
            raise TPMError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-1500:]}{self._logs()}")
        return proc

    # -- start / stop ------------------------------------------------------------------------
    def __enter__(self) -> SoftwareTPM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> SoftwareTPM:
        ok, why = tpm_available()
        if not ok:
            raise TPMError(why)
        assert self.dir is None, "SoftwareTPM already started"
        t0 = time.monotonic()
        # Short: the bus socket's path must stay under the ~107-byte sun_path limit.
        self.dir = Path(tempfile.mkdtemp(prefix="tpm-", dir=self.base))
        _register(self)
        try:
            self._timed("swtpm", self._start_swtpm)
            self._timed("dbus", self._start_dbus)
            self._timed("abrmd", self._start_abrmd)
            self._timed("lockout_policy", self._set_lockout_policy)
        except (OSError, subprocess.SubprocessError) as e:
            why = f"{e}{self._logs()}"
            self.stop()
            raise TPMError(f"the software TPM did not start: {why}") from e
        except BaseException:
            self.stop()
            raise
        self.timings["start_total"] = time.monotonic() - t0
        return self

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        t = time.monotonic()
        step()
        self.timings[name] = time.monotonic() - t

    def _start_swtpm(self) -> None:
        assert self.dir is not None
        state = self.dir / "state"
        state.mkdir()
        pid_file = self.dir / "swtpm.pid"
        last = ""
        for _ in range(5):  # a free port can be taken between the probe and swtpm's bind
            self.port = _free_port_pair()
            cmd = [
                _tool("swtpm"), "socket", "--tpm2",
                "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
                "--tpmstate", f"dir={state}",
                "--flags", "not-need-init,startup-clear",
                "--log", f"file={self.dir / 'swtpm.log'}",
                "--daemon", "--pid", f"file={pid_file}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode == 0 and pid_file.exists():
                self._swtpm_pid = int(pid_file.read_text().split()[0])
                return
            last = f"swtpm exited {proc.returncode}: {proc.stderr.strip()} {_tail(self.dir / 'swtpm.log')}"
        raise TPMError(f"swtpm did not start: {last}")

    def _start_dbus(self) -> None:
        assert self.dir is not None
        pid_file = self.dir / "dbus.pid"
        with open(pid_file, "wb") as out:
            proc = subprocess.run(
                [_tool("dbus-daemon"), "--session", "--fork", f"--address={self.bus_address}", "--print-pid=1"],
                stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=30, check=False,
            )  # fmt: skip
        text = pid_file.read_text().strip()
        if proc.returncode != 0 or not text.isdigit():
            raise TPMError(f"dbus-daemon exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
        self._dbus_pid = int(text)

    def _start_abrmd(self) -> None:
        assert self.dir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TPM2", "TSS2_"))}
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        self._abrmd_log = open(self.dir / "abrmd.log", "wb")  # noqa: SIM115 - closed in stop()
        self._abrmd = subprocess.Popen(
            [_tool("tpm2-abrmd"), "--session", "--allow-root", "--flush-all", "--max-transients=100",
             f"--tcti=swtpm:host=127.0.0.1,port={self.port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._abrmd_log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C to pytest must not kill it before the clean stop
        )  # fmt: skip
        # Ready when it owns its name on the bus: the first tpm2-tools command that gets through.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._abrmd.poll() is not None:
                raise TPMError(f"tpm2-abrmd exited {self._abrmd.returncode}{self._logs()}")
            proc = self.tool("tpm2_getcap", "properties-fixed", check=False, timeout=10)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TPMError(f"tpm2-abrmd not on the bus after {START_TIMEOUT} s: {proc.stderr.strip()[-500:]}{self._logs()}")
            time.sleep(0.01)

    def _set_lockout_policy(self) -> None:
        self.clear_lockout()
        self.tool("tpm2_dictionarylockout", "--setup-parameters", "--max-tries=3", "--recovery-time=10",
                  "--lockout-recovery-time=10")  # fmt: skip

    def clear_lockout(self) -> None:
        """Reset the dictionary-attack counter (a wrong PIN anywhere on this TPM counts)."""
        self.tool("tpm2_dictionarylockout", "--clear-lockout")

    def _logs(self) -> str:
        if self.dir is None:
            return ""
        parts = []
        for name in ("swtpm.log", "abrmd.log"):
            tail = _tail(self.dir / name)
            if tail:
                parts.append(f"\n--- {name} (tail) ---\n{tail}")
        return "".join(parts)

    @property
    def running(self) -> bool:
        return self.dir is not None

    def stop(self) -> None:
        """Shut the TPM down cleanly, stop abrmd and the bus (by PID), remove the directory."""
        if self.dir is None:
            return
        t0 = time.monotonic()
        d = self.dir
        abrmd_up = self._abrmd is not None and self._abrmd.poll() is None
        swtpm_up = self._swtpm_pid is not None and _alive(self._swtpm_pid)
        if abrmd_up and swtpm_up:
            # An unclean stop counts as a dictionary-attack failure on the next start.
            with contextlib.suppress(Exception):
                self.tool("tpm2_shutdown", "--clear", check=False, timeout=10)
        if swtpm_up:
            with contextlib.suppress(Exception):
                subprocess.run([_tool("swtpm_ioctl"), "--tcp", f"127.0.0.1:{self.ctrl_port}", "-s"],
                               capture_output=True, timeout=10, check=False)  # fmt: skip
        if self._swtpm_pid is not None:
            self._kill(self._swtpm_pid, str(d), wait_first=3.0)
        if self._abrmd is not None:
            if self._abrmd.poll() is None:
                self._abrmd.terminate()
                try:
                    self._abrmd.wait(5)
                except subprocess.TimeoutExpired:
                    self._abrmd.kill()
                    self._abrmd.wait(5)
            self._abrmd = None
        if self._abrmd_log is not None:
            self._abrmd_log.close()
            self._abrmd_log = None
        if self._dbus_pid is not None:
            self._kill(self._dbus_pid, str(d), wait_first=0.0)
        self._swtpm_pid = self._dbus_pid = None
        shutil.rmtree(d, ignore_errors=True)
        self.dir = None
        _unregister(self)
        self.timings["stop"] = time.monotonic() - t0

    @staticmethod
    def _kill(pid: int, marker: str, *, wait_first: float) -> None:
        """Stop ``pid`` if it is still ours (its command line names our directory)."""
        if wait_first and _wait_gone(pid, wait_first):
            return
        if not _alive(pid) or marker not in _cmdline(pid):
            return  # gone, or the PID was reused by someone else's process
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if _wait_gone(pid, 5.0):
                return


@dataclass
class TPMTokens:
    """A tpm2-pkcs11 store on a :class:`SoftwareTPM`: the same interface as ``support.softhsm.SoftHSM``.

    Every token in every store on one TPM has serial 0000000000000000, and the module always
    shows one extra uninitialised slot (empty label): select tokens by label.
    """

    root: Path
    tpm: SoftwareTPM
    store: Path
    env: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    module: str = TPM2_MODULE
    #: Why 'tokenissue token init' failed, for each token added through the tpm2_ptool fallback.
    init_failures: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess with this store."""
        return run_cli({**self.env, **(env or {})}, args, input=input, check=check)

    def add_token(self, label: str, *, via: str = "tokenissue") -> None:
        """Add an initialised token (SO PIN SO_PIN, user PIN USER_PIN).

        ``via="tokenissue"``: the product's ``tokenissue token init`` on the module's free slot,
        falling back to ``tpm2_ptool addtoken`` (the failure is kept in ``init_failures``);
        ``via="ptool"``: tpm2_ptool straight away.
        """
        t = time.monotonic()
        if via == "tokenissue":
            args = ("token", "init", "--label", label)
            proc = self.run(*args, env={"TOKENISSUE_SO_PIN": SO_PIN, "TOKENISSUE_PIN": USER_PIN})
            if proc.returncode == 0:
                self.labels.append(label)
                self.timings[f"add_token:{label}"] = time.monotonic() - t
                return
            self.init_failures.append(
                f"tokenissue {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout.strip()}\n"
                f"stderr: {proc.stderr.strip()}"
            )
            warnings.warn(f"falling back to tpm2_ptool addtoken: {self.init_failures[-1]}", stacklevel=2)
        elif via != "ptool":
            raise ValueError(f"via must be 'tokenissue' or 'ptool', not {via!r}")
        self._ptool_addtoken(label)
        self.labels.append(label)
        self.timings[f"add_token:{label}"] = time.monotonic() - t

    def _ptool_addtoken(self, label: str) -> None:
        path = str(self.store)
        primaries = self.tpm.tool("tpm2_ptool", "listprimaries", "--path", path).stdout
        if "id:" not in primaries:
            # Reuse the TPM's primary when there is one: each plain 'init' persists another.
            handles = self.tpm.tool("tpm2_getcap", "handles-persistent").stdout
            reuse = ["--primary-handle", PRIMARY_HANDLE] if PRIMARY_HANDLE in handles.lower() else []
            self.tpm.tool("tpm2_ptool", "init", *reuse, "--path", path)
        self.tpm.tool("tpm2_ptool", "addtoken", "--pid", "1", "--label", label, "--sopin", SO_PIN,
                      "--userpin", USER_PIN, "--path", path)  # fmt: skip


def make_tpm_tokens(root: Path, tpm: SoftwareTPM, *, with_softhsm: SoftHSM | None = None) -> TPMTokens:
    """An empty tpm2-pkcs11 store in ``root/store`` on ``tpm``, and an environment to run the CLI
    with (like make_softhsm's). With ``with_softhsm`` the environment also carries that SoftHSM's
    SOFTHSM2_CONF, so one process can use both modules (e.g. a CA on SoftHSM, a holder on the TPM)."""
    store = root / "store"
    store.mkdir(parents=True, exist_ok=True)
    env = cli_env(root, TPM2_MODULE, drop=("TOKENISSUE_", "TPM2", "TSS2_"),
                  drop_names=("SOFTHSM2_CONF", "DBUS_SESSION_BUS_ADDRESS"))  # fmt: skip
    env.update(tpm.client_env)
    env["TPM2_PKCS11_STORE"] = str(store)
    if with_softhsm is not None:
        env["SOFTHSM2_CONF"] = str(with_softhsm.conf)
    return TPMTokens(root=root, tpm=tpm, store=store, env=env)


def start_software_tpm() -> SoftwareTPM:
    """A started SoftwareTPM; the test is skipped (failed in CI, where 'make test' installs the
    packages) when the packages are missing or the TPM does not start."""
    ok, why = tpm_available()
    if not ok:
        _tpm_unavailable(why)
    try:
        return SoftwareTPM().start()
    except TPMError as e:
        _tpm_unavailable(f"the software TPM did not start: {e}")


def _tpm_unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"The software TPM is needed in CI: {why}")
    pytest.skip(why)


@contextlib.contextmanager
def tpm_in_process(store: TPMTokens, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This process's tpm2-pkcs11 pointed at ``store`` (it reads the store path at C_Initialize):
    yields python-pkcs11's lib for it; the module is refreshed again on the way out."""
    from tokenissue import p11

    for key, value in store.tpm.client_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TPM2_PKCS11_STORE", str(store.store))
    mod = p11.load_module(TPM2_MODULE)
    mod.refresh()
    try:
        yield mod.lib
    finally:
        mod.refresh()
