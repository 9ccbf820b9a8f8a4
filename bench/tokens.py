"""Token speeds: SoftHSM (tmpfs) vs tpm2-pkcs11 on a software TPM, tokenissue vs raw python-pkcs11.

Operations, each as a rate (operations per second = 1000 / median ms of one operation):

* keygen ec-p256, sign ecdsa-p256, keygen rsa-2048, sign rsa-2048 (PKCS#1 v1.5, SHA-256),
  write certificate (one CKO_CERTIFICATE object);
* enroll ec-p256: one whole enrollment with the holder's key on the implementation under test
  and a local CA whose key is on SoftHSM, three ways: the ``tokenissue enroll`` CLI as a fresh
  process (what a user runs), ``tokenissue.lifecycle.enroll`` in one process (what batch and
  the CMP server get), and the raw floor.

Three contenders per operation and implementation:

* **raw**: python-pkcs11 alone in one logged-in session, the same templates and mechanisms
  tokenissue negotiates on that token (SoftHSM: the strict sign-only template, ECDSA on a digest
  hashed on the host since SoftHSM 2.6.1 has no CKM_ECDSA_SHA256; TPM: the ``token-usage``
  template, CKM_ECDSA_SHA256 hashing on the token). The enrollment floor is the token work of
  one enrollment and nothing else: holder keygen, public key read, CSR signature, CA signature
  (SoftHSM), proof-of-possession signature, certificate write. No X.509, no database.
* **tokenissue**: the same operations through ``tokenissue.p11`` in one process
  (``generate_key`` with its label check, negotiation, read-back and CKA_ID rewrite;
  ``private_key().sign`` with the DER conversion; ``write_certificate`` with its duplicate check).
* the enroll CLI rows: whole processes timed around ``subprocess.run``, SoftHSM and TPM rounds
  interleaved after one untimed warm-up round each.

Every contender runs on a FRESH token of its own (the raw one and the tokenissue one on each
implementation), in the same order, so a filling token hits both alike. Per-operation workers
are separate processes (``python bench/tokens.py --worker ...``) of at most CHUNK operations:
tpm2-pkcs11 keeps every key it touched loaded until C_Finalize and tpm2-abrmd caps transient
objects per connection. Chunks of raw and tokenissue, SoftHSM and TPM, are interleaved.

Printed: each rate, tokenissue/raw (tokenissue's overhead as a ratio; 1.00x = no overhead) and
TPM/SoftHSM (same run; below 1 = the TPM is slower).

The software TPM is started here as tests/support/tpm.py does (swtpm on 127.0.0.1 only, a
private dbus-daemon, tpm2-abrmd with --max-transients=100), in a private directory on /dev/shm,
and stopped cleanly (tpm2_shutdown, swtpm_ioctl -s) then by PID. Without the TPM packages
only SoftHSM is measured, and the reason is printed.

    .venv/bin/python bench/tokens.py [--runs N] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TPM2_MODULE = next(
    (p for p in (f"/usr/lib/{a}/pkcs11/libtpm2_pkcs11.so" for a in ("x86_64-linux-gnu", "aarch64-linux-gnu"))
     if Path(p).exists()),
    "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
)  # fmt: skip
USER_PIN = "246810"
SO_PIN = "13579135"
PROFILE = "tls-client"
CHUNK = 20  # operations per worker process (see the docstring: TPM transient objects)
OPS = ("keygen ec-p256", "sign ecdsa-p256", "keygen rsa-2048", "sign rsa-2048", "write certificate",
       "enroll ec-p256")  # fmt: skip
# tpm2-abrmd is in /usr/sbin, which is not on every PATH.
_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
_TPM_TOOLS = ("swtpm", "swtpm_ioctl", "tpm2-abrmd", "dbus-daemon", "tpm2_getcap", "tpm2_shutdown", "tpm2_ptool")


def _tokenissue_argv() -> list[str]:
    script = Path(sys.executable).parent / "tokenissue"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tokenissue.cli"]


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return dt, proc.stdout


def _base_env(pycache: Path) -> dict[str, str]:
    drop = ("TOKENISSUE_", "TPM2", "TSS2_", "PKCS11_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in (
        "SOFTHSM2_CONF", "DBUS_SESSION_BUS_ADDRESS", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    # Cached bytecode, as a wheel install has (see bench/enroll.py); nothing written to the repo.
    env.update({"LC_ALL": "C", "COLUMNS": "120", "PYTHONPYCACHEPREFIX": str(pycache)})
    return env


# -- a software TPM (the minimal part of tests/support/tpm.py) -------------------------------
def _tool(name: str) -> str:
    path = shutil.which(name, path=_PATH)
    if path is None:
        raise RuntimeError(f"{name} not found")
    return path


def tpm_missing() -> str:
    """Why no software TPM can be started here ('' when it can)."""
    missing = [t for t in _TPM_TOOLS if shutil.which(t, path=_PATH) is None]
    if not Path(TPM2_MODULE).exists():
        missing.append(TPM2_MODULE)
    return f"missing: {' '.join(missing)} (make deps)" if missing else ""


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of TCP ports on 127.0.0.1")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _stop_pid(pid: int, marker: str) -> None:
    """Stop ``pid`` if it is still ours: its command line names our private directory."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                return
            if marker not in cmdline:
                return  # gone and the PID reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            return


class SoftwareTPM:
    """swtpm (TCP, 127.0.0.1) + a private dbus-daemon + tpm2-abrmd, in a directory on /dev/shm."""

    def __init__(self, base: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tpm-", dir=base))  # short: bus socket path limit
        self.port = 0
        self.swtpm_pid: int | None = None
        self.dbus_pid: int | None = None
        self.abrmd: subprocess.Popen[bytes] | None = None

    @property
    def client_env(self) -> dict[str, str]:
        return {"TPM2_PKCS11_TCTI": "tabrmd:bus_type=session",
                "DBUS_SESSION_BUS_ADDRESS": f"unix:path={self.dir / 'dbus.sock'}",
                "TPM2_PKCS11_LOG_LEVEL": "0", "TSS2_LOG": "all+NONE", "TPM2TOOLS_TCTI": "tabrmd:bus_type=session"}

    def tool(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, **self.client_env, **(env or {})}
        return subprocess.run([_tool(args[0]), *args[1:]], env=full, capture_output=True, text=True, timeout=60,
                              check=False)  # fmt: skip

    def start(self) -> SoftwareTPM:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        (self.dir / "state").mkdir()
        pid_file = self.dir / "swtpm.pid"
        for _ in range(5):
            self.port = _free_port_pair()
            proc = subprocess.run(
                [_tool("swtpm"), "socket", "--tpm2",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--tpmstate", f"dir={self.dir / 'state'}", "--flags", "not-need-init,startup-clear",
                 "--daemon", "--pid", f"file={pid_file}"],
                capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            if proc.returncode == 0 and pid_file.exists():
                self.swtpm_pid = int(pid_file.read_text().split()[0])
                break
        else:
            raise RuntimeError(f"swtpm did not start: {proc.stderr.strip()}")
        bus_pid = self.dir / "dbus.pid"
        with open(bus_pid, "wb") as out:
            subprocess.run([_tool("dbus-daemon"), "--session", "--fork", "--print-pid=1",
                            f"--address=unix:path={self.dir / 'dbus.sock'}"],
                           stdout=out, stdin=subprocess.DEVNULL, timeout=30, check=True)  # fmt: skip
        self.dbus_pid = int(bus_pid.read_text().strip())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TPM2", "TSS2_"))}
        env["DBUS_SESSION_BUS_ADDRESS"] = self.client_env["DBUS_SESSION_BUS_ADDRESS"]
        self.abrmd = subprocess.Popen(
            [_tool("tpm2-abrmd"), "--session", "--allow-root", "--flush-all", "--max-transients=100",
             f"--tcti=swtpm:host=127.0.0.1,port={self.port}"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while self.tool("tpm2_getcap", "properties-fixed").returncode != 0:
            if self.abrmd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tpm2-abrmd did not come up")
            time.sleep(0.02)

    def add_token(self, store: Path, label: str) -> None:
        store.mkdir(parents=True, exist_ok=True)
        if "id:" not in self.tool("tpm2_ptool", "listprimaries", "--path", str(store)).stdout:
            init = self.tool("tpm2_ptool", "init", "--path", str(store))
            if init.returncode != 0:
                raise RuntimeError(f"tpm2_ptool init: {init.stderr.strip()}")
        proc = self.tool("tpm2_ptool", "addtoken", "--pid", "1", "--label", label, "--sopin", SO_PIN,
                         "--userpin", USER_PIN, "--path", str(store))  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"tpm2_ptool addtoken: {proc.stderr.strip()}")

    def stop(self) -> None:
        marker = str(self.dir)
        abrmd_up = self.abrmd is not None and self.abrmd.poll() is None
        swtpm_up = self.swtpm_pid is not None and _alive(self.swtpm_pid)
        if abrmd_up and swtpm_up:
            self.tool("tpm2_shutdown", "--clear")  # an unclean stop counts against the lockout
        if swtpm_up:
            subprocess.run([_tool("swtpm_ioctl"), "--tcp", f"127.0.0.1:{self.port + 1}", "-s"],
                           capture_output=True, timeout=10, check=False)  # fmt: skip
        if self.swtpm_pid is not None:
            _stop_pid(self.swtpm_pid, marker)
        if self.abrmd is not None:
            if self.abrmd.poll() is None:
                self.abrmd.terminate()
                try:
                    self.abrmd.wait(5)
                except subprocess.TimeoutExpired:
                    self.abrmd.kill()
                    self.abrmd.wait(5)
            self.abrmd = None
        if self.dbus_pid is not None:
            _stop_pid(self.dbus_pid, marker)
        self.swtpm_pid = self.dbus_pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


# -- implementations under test ---------------------------------------------------------------
class Impl:
    """One PKCS#11 implementation: module, environment, fresh tokens by label."""

    def __init__(self, name: str, module: str, env: dict[str, str], add: Any) -> None:
        self.name, self.module, self.env, self._add = name, module, env, add

    def add_token(self, label: str) -> None:
        self._add(label)


def _softhsm(root: Path, base: dict[str, str]) -> Impl:
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")  # fmt: skip
    env = {**base, "SOFTHSM2_CONF": str(conf), "TOKENISSUE_MODULE": SOFTHSM_MODULE, "TOKENISSUE_PIN": USER_PIN,
           "TOKENISSUE_CA_PIN": USER_PIN}  # fmt: skip

    def add(label: str) -> None:
        _run(["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", USER_PIN], env)

    return Impl("SoftHSM", SOFTHSM_MODULE, env, add)


def _tpm(tpm: SoftwareTPM, root: Path, base: dict[str, str], softhsm: Impl) -> Impl:
    store = root / "store"
    env = {**base, **tpm.client_env, "TPM2_PKCS11_STORE": str(store), "TOKENISSUE_MODULE": TPM2_MODULE,
           "TOKENISSUE_PIN": USER_PIN, "TOKENISSUE_CA_PIN": USER_PIN,
           # The CA's token is on SoftHSM: one enroll process uses both modules.
           "SOFTHSM2_CONF": softhsm.env["SOFTHSM2_CONF"]}  # fmt: skip
    return Impl("TPM", TPM2_MODULE, env, lambda label: tpm.add_token(store, label))


# -- workers (run as `python bench/tokens.py --worker SPEC`) ----------------------------------
def _mapper() -> Any:
    """python-pkcs11 0.10 cannot encode CKA_ALLOWED_MECHANISMS (a list); tokenissue teaches it."""
    import array

    from pkcs11 import Attribute
    from pkcs11.attributes import AttributeMapper, handle_ulong

    m = AttributeMapper()
    m.register_handler(Attribute.ALLOWED_MECHANISMS, lambda v: array.array("L", [int(x) for x in v]).tobytes(),
                       lambda b: list(array.array("L", b)))  # fmt: skip
    m.register_handler(Attribute.CERTIFICATE_CATEGORY, *handle_ulong)
    return m


def _certificate() -> Any:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenissue bench")])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256()))  # fmt: skip


class _Raw:
    """python-pkcs11 alone, with the templates and mechanisms tokenissue uses on this token."""

    def __init__(self, module: str, label: str, tpm: bool, lib: Any = None) -> None:
        import pkcs11
        from pkcs11 import Attribute, Mechanism

        self.p, self.A, self.M = pkcs11, Attribute, Mechanism
        self.lib = lib if lib is not None else pkcs11.lib(module)
        self.session = self.lib.get_token(token_label=label).open(rw=True, user_pin=USER_PIN,
                                                                  attribute_mapper=_mapper())  # fmt: skip
        self.tpm = tpm
        self.cert = _certificate()
        self._sign_keys: dict[str, Any] = {}

    def _templates(self, rsa: bool) -> tuple[dict[Any, Any], dict[Any, Any]]:
        A, M = self.A, self.M
        allowed = ([M.RSA_PKCS, M.SHA256_RSA_PKCS, M.SHA384_RSA_PKCS, M.SHA512_RSA_PKCS] if rsa
                   else [M.ECDSA] + ([M.ECDSA_SHA256, M.ECDSA_SHA384, M.ECDSA_SHA512] if self.tpm else []))
        if rsa and not self.tpm:
            allowed += [M.RSA_PKCS_PSS, M.SHA256_RSA_PKCS_PSS, M.SHA384_RSA_PKCS_PSS, M.SHA512_RSA_PKCS_PSS]
        priv = {A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False, A.SIGN: True,
                A.DERIVE: False, A.SIGN_RECOVER: False, A.ALLOWED_MECHANISMS: allowed}
        pub = {A.TOKEN: True, A.PRIVATE: False, A.VERIFY: True, A.VERIFY_RECOVER: False}
        # The strict template forbids decrypt/unwrap; the TPM's token-usage step leaves them out
        # (pkcs11.DEFAULT drops them from python-pkcs11's own defaults too).
        forbid = self.p.DEFAULT if self.tpm else False
        priv.update({A.DECRYPT: forbid, A.UNWRAP: forbid})
        pub.update({A.ENCRYPT: forbid, A.WRAP: forbid})
        if not rsa:
            pub[A.EC_PARAMS] = bytes.fromhex("06082a8648ce3d030107")
        return pub, priv  # fmt: skip

    def keygen(self, kind: str, i: int) -> Any:
        from pkcs11 import KeyType, MechanismFlag

        rsa = kind == "rsa"
        pub_t, priv_t = self._templates(rsa)
        kw = {"key_length": 2048} if rsa else {}
        return self.session.generate_keypair(KeyType.RSA if rsa else KeyType.EC, id=os.urandom(20),
                                             label=f"raw-{kind}-{i}-{uuid.uuid4().hex[:6]}", store=True,
                                             capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                                             public_template=pub_t, private_template=priv_t, **kw)[1]  # fmt: skip

    def sign(self, kind: str, message: bytes, key: Any = None) -> bytes:
        import hashlib

        if key is None:
            key = self._sign_keys.get(kind) or self._sign_keys.setdefault(kind, self.keygen(kind, 0))
        if kind == "rsa":
            return bytes(key.sign(message, mechanism=self.M.SHA256_RSA_PKCS))
        if self.tpm:
            return bytes(key.sign(message, mechanism=self.M.ECDSA_SHA256))
        return bytes(key.sign(hashlib.sha256(message).digest(), mechanism=self.M.ECDSA))

    def write_certificate(self, i: int) -> None:
        from cryptography.hazmat.primitives import serialization
        from pkcs11 import CertificateType, ObjectClass

        A, c = self.A, self.cert
        serial = c.serial_number.to_bytes((c.serial_number.bit_length() + 8) // 8, "big")
        self.session.create_object({
            A.CLASS: ObjectClass.CERTIFICATE, A.CERTIFICATE_TYPE: CertificateType.X_509, A.TOKEN: True,
            A.PRIVATE: False, A.ID: os.urandom(20), A.LABEL: f"raw-cert-{i}", A.SUBJECT: c.subject.public_bytes(),
            A.VALUE: c.public_bytes(serialization.Encoding.DER), A.ISSUER: c.issuer.public_bytes(),
            A.SERIAL_NUMBER: b"\x02" + bytes([len(serial)]) + serial,
        })  # fmt: skip


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One chunk of one operation on one token; returns per-operation seconds."""
    op, mode, n, label, module = spec["op"], spec["mode"], spec["n"], spec["label"], spec["module"]
    tpm = module == TPM2_MODULE
    msg = b"tokenissue bench: the bytes a CSR's signature covers, more or less" * 4
    samples: list[float] = []
    first: list[float] = []  # the untimed first operation of this process
    info: dict[str, Any] = {}
    if mode == "raw" and op != "enroll ec-p256":
        raw = _Raw(module, label, tpm)
        kind = "rsa" if "rsa" in op else "ec"
        if op.startswith("sign"):
            raw.sign(kind, msg)  # makes the signing key, untimed
        for i in range(-1, n):  # -1: an untimed first operation, as in every worker
            t0 = time.perf_counter()
            if op.startswith("keygen"):
                raw.keygen(kind, spec["offset"] + i)
            elif op.startswith("sign"):
                raw.sign(kind, msg)
            else:
                raw.write_certificate(spec["offset"] + i)
            (samples.append if i >= 0 else first.append)(time.perf_counter() - t0)
        raw.session.close()
    elif mode == "raw":
        # The token work of one enrollment: holder keygen, public key read, CSR signature, CA
        # signature (on SoftHSM), proof-of-possession signature, certificate write.
        raw = _Raw(module, label, tpm)
        # The CA's token is on SoftHSM: a second module in this process (TPM), or the same one.
        ca = _Raw(SOFTHSM_MODULE, spec["ca_label"], False, lib=None if tpm else raw.lib)
        ca.sign("ec", msg)  # the CA key, untimed
        for i in range(-1, n):
            t0 = time.perf_counter()
            key = raw.keygen("ec", spec["offset"] + i)
            pub = next(iter(raw.session.get_objects({raw.A.CLASS: raw.p.ObjectClass.PUBLIC_KEY,
                                                     raw.A.ID: key[raw.A.ID]})))  # fmt: skip
            _ = pub[raw.A.EC_POINT]
            raw.sign("ec", msg, key)
            ca.sign("ec", msg)
            raw.sign("ec", msg, key)
            raw.write_certificate(spec["offset"] + i)
            (samples.append if i >= 0 else first.append)(time.perf_counter() - t0)
    elif op == "enroll ec-p256":
        from tokenissue import p11
        from tokenissue.credentials import Pin
        from tokenissue.enroll import open_enroller
        from tokenissue.inventory import Inventory
        from tokenissue.lifecycle import EnrollParams, enroll

        state = Path(spec["state"])
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        sel = p11.TokenSelector.parse(label)
        with Inventory.open(state / "state.db") as db:
            serial = p11.load_module(module).token_info(sel).name
            enroller = open_enroller(spec["ca_dir"], ca_pin=Pin(USER_PIN), module=SOFTHSM_MODULE)
            try:
                for i in range(n + 1):  # the first is a warm-up (database, CA, module caches)
                    cn = f"inproc-{spec['offset'] + i}-{uuid.uuid4().hex[:6]}"
                    params = EnrollParams(token_serial=serial, subject=f"CN={cn},O=tokenissue", profile=PROFILE,
                                          key_type="ec-p256", ca=enroller.location, san=(f"dns:{cn}.example.test",))
                    t0 = time.perf_counter()
                    enroll(params, token=sel, pin=Pin(USER_PIN), enroller=enroller, holder=db, module=module)
                    (samples.append if i else first.append)(time.perf_counter() - t0)
            finally:
                enroller.close()
    else:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding

        from tokenissue import p11
        from tokenissue.credentials import Pin
        from tokenissue.models import KeyType

        kt = KeyType.RSA_2048 if "rsa" in op else KeyType.EC_P256
        cert = _certificate()
        with p11.open_token(p11.TokenSelector.parse(label), Pin(USER_PIN), module=module) as s:
            key = None
            if op.startswith("sign"):
                made = s.generate_key(kt, f"ti-sign-{uuid.uuid4().hex[:8]}")
                key = s.private_key(p11.KeySelector(id=made.id))
                info["template"] = made.template
            # -1: an untimed first operation; for keygen it is the one that negotiates the key
            # template (every new process does: the capability record lives in the process).
            for i in range(-1, n):
                t0 = time.perf_counter()
                if op.startswith("keygen"):
                    made = s.generate_key(kt, f"ti-{kt.value}-{spec['offset'] + i}-{uuid.uuid4().hex[:6]}")
                    info["template"] = made.template
                elif op.startswith("sign") and kt is KeyType.RSA_2048:
                    assert key is not None
                    key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
                elif op.startswith("sign"):
                    assert key is not None
                    key.sign(msg, ec.ECDSA(hashes.SHA256()))
                else:
                    s.write_certificate(cert, key_id=os.urandom(20), label=f"ti-cert-{spec['offset'] + i}")
                (samples.append if i >= 0 else first.append)(time.perf_counter() - t0)
    return {"samples": samples, "first": first, **info}


# -- the benchmark ------------------------------------------------------------------------------
class Bench:
    def __init__(self, root: Path, runs: int) -> None:
        self.root, self.runs = root, runs
        self.pycache = root / "pycache"
        self.base = _base_env(self.pycache)
        self.impls: list[Impl] = []
        self.tpm: SoftwareTPM | None = None
        self.tpm_skipped = ""
        self.samples: dict[tuple[str, str, str], list[float]] = {}  # (impl, op, contender) -> seconds
        self.templates: dict[str, str] = {}
        self.first: dict[tuple[str, str, str], list[float]] = {}  # first operation of each worker

    def setup(self) -> None:
        soft = _softhsm(self.root / "softhsm", self.base)
        for label in ("raw", "ti", "ca", "holder"):
            soft.add_token(label)
        self.impls.append(soft)
        self.tpm_skipped = tpm_missing()
        if not self.tpm_skipped:
            self.tpm = SoftwareTPM(self.root).start()
            tpm = _tpm(self.tpm, self.root / "tpm", self.base, soft)
            for label in ("raw", "ti", "holder"):
                tpm.add_token(label)
            self.impls.append(tpm)
        self.ca_dir = self.root / "ca"
        _run([*_tokenissue_argv(), "ca", "init", "--ca", str(self.ca_dir), "--token", "ca",
              "--subject", "CN=tokenissue bench CA,O=tokenissue"], soft.env)  # fmt: skip

    def stop(self) -> None:
        if self.tpm is not None:
            self.tpm.stop()
            self.tpm = None

    def _worker(self, impl: Impl, spec: dict[str, Any]) -> dict[str, Any]:
        _, out = _run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)], impl.env)
        return dict(json.loads(out.strip().splitlines()[-1]))

    def measure_ops(self) -> None:
        for op in OPS:
            print(f"... {op}", file=sys.stderr, flush=True)
            done = 0
            while done < self.runs:
                n = min(CHUNK, self.runs - done)
                for impl in self.impls:
                    for mode in ("raw", "tokenissue"):
                        label = {"raw": "raw", "tokenissue": "ti"}[mode]
                        if op.startswith("enroll"):
                            label = "holder"
                        spec = {"op": op, "mode": mode, "n": n, "offset": done, "label": label,
                                "module": impl.module, "ca_label": "ca", "ca_dir": str(self.ca_dir),
                                "state": str(self.root / f"state-{impl.name}")}  # fmt: skip
                        got = self._worker(impl, spec)
                        self.samples.setdefault((impl.name, op, mode), []).extend(got["samples"])
                        self.first.setdefault((impl.name, op, mode), []).extend(got["first"])
                        if "template" in got:
                            self.templates[impl.name] = got["template"]
                done += n

    def measure_cli_enroll(self) -> None:
        print("... enroll ec-p256 (CLI)", file=sys.stderr, flush=True)
        ti = _tokenissue_argv()

        def once(impl: Impl, i: int) -> float:
            cn = f"cli-{impl.name.lower()}-{i}"
            dt, out = _run([*ti, "enroll", "--token", "holder", "--ca", str(self.ca_dir), "--subject",
                            f"CN={cn},O=tokenissue", "--profile", PROFILE, "--type", "ec-p256",
                            "--san", f"dns:{cn}.example.test", "--json"],
                           {**impl.env, "TOKENISSUE_STATE_DIR": str(self.root / f"cli-state-{impl.name}")})  # fmt: skip
            if json.loads(out)["subject"] != f"CN={cn},O=tokenissue":
                raise RuntimeError(f"unexpected enroll result: {out}")
            return dt

        for impl in self.impls:
            once(impl, self.runs)  # warm-up: state db, bytecode cache
        for i in range(self.runs):
            for impl in self.impls:
                self.samples.setdefault((impl.name, "enroll ec-p256", "cli"), []).append(once(impl, i))


def _rate(samples: list[float]) -> float:
    return 1.0 / statistics.median(samples) if samples else float("nan")


def _table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    out = ["| " + " | ".join(h.ljust(w) if c == 0 else h.rjust(w) for c, (h, w) in enumerate(zip(head, widths, strict=True))) + " |",
           "|" + "|".join("-" * (w + 1) + ("-" if c == 0 else ":") for c, w in enumerate(widths)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(x.ljust(w) if c == 0 else x.rjust(w)
                                     for c, (x, w) in enumerate(zip(r, widths, strict=True))) + " |")
    return "\n".join(out)  # fmt: skip


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:,.1f}" if rate >= 1 else f"{rate:.2f}"


def report(bench: Bench) -> tuple[str, list[dict[str, Any]]]:
    names = [i.name for i in bench.impls]
    rows: list[dict[str, Any]] = []
    lines: list[tuple[str, ...]] = []
    contenders = [(op, "tokenissue") for op in OPS] + [("enroll ec-p256", "cli")]
    for op, mode in contenders:
        row: dict[str, Any] = {"operation": op + (" (CLI process)" if mode == "cli" else
                                                  " (in-process)" if op.startswith("enroll") else "")}
        cells = [row["operation"]]
        for name in names:
            raw = _rate(bench.samples.get((name, op, "raw"), []))
            ti = _rate(bench.samples.get((name, op, mode), []))
            row[name] = {"raw_per_s": raw, "tokenissue_per_s": ti, "tokenissue_over_raw": ti / raw,
                         "n": len(bench.samples.get((name, op, mode), []))}  # fmt: skip
            cells += [_fmt(raw), _fmt(ti), f"{ti / raw:.2f}x"]
        if "TPM" in names:
            s, t = row["SoftHSM"], row["TPM"]
            row["tpm_over_softhsm_tokenissue"] = t["tokenissue_per_s"] / s["tokenissue_per_s"]
            row["tpm_over_softhsm_raw"] = t["raw_per_s"] / s["raw_per_s"]
            cells += [f"{row['tpm_over_softhsm_tokenissue']:.3f}x", f"{row['tpm_over_softhsm_raw']:.3f}x"]
        cells.append(str(row[names[0]]["n"]))
        rows.append(row)
        lines.append(tuple(cells))
    head = ["operation"]
    for name in names:
        head += [f"{name} raw/s", f"{name} tokenissue/s", "ti/raw"]
    if "TPM" in names:
        head += ["TPM/SoftHSM ti", "TPM/SoftHSM raw"]
    head.append("N")
    return _table(tuple(head), lines), rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="operations timed per contender (default 20)")
    ap.add_argument("--json", type=Path, help="also save the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    if not Path(SOFTHSM_MODULE).exists() or shutil.which("softhsm2-util") is None:
        print(f"SoftHSM2 not installed ({SOFTHSM_MODULE}); run `make deps`", file=sys.stderr)
        return 2
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    root = base / f"tokenissue-bench-tokens-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(mode=0o700)
    started = time.perf_counter()
    bench = Bench(root, args.runs)
    try:
        bench.setup()
        bench.measure_ops()
        bench.measure_cli_enroll()
    finally:
        bench.stop()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    table, rows = report(bench)
    load = os.getloadavg()
    print(f"\ntokens: SoftHSM 2.6 on {base} vs tpm2-pkcs11 on swtpm (tpm2-abrmd), operations per second = "
          f"1 / median; {args.runs} per contender (Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average at end {load[0]:.2f})\n")  # fmt: skip
    if bench.tpm_skipped:
        print(f"TPM not measured: {bench.tpm_skipped}\n")
    print(table)
    print("  raw = python-pkcs11 alone, one logged-in session, tokenissue's templates and mechanisms; "
          "tokenissue = tokenissue.p11 in one process;\n  ti/raw = tokenissue rate / raw rate; "
          "TPM/SoftHSM = TPM rate / SoftHSM rate, same run (ti: tokenissue, raw: raw);\n"
          "  enroll rows: raw = the token work of one enrollment (keygen, 3 signatures incl. the CA's on SoftHSM, "
          "1 certificate write);\n  in-process = tokenissue.lifecycle.enroll in one process; CLI process = "
          "`tokenissue enroll` as a fresh process (CA on SoftHSM in both cases)")  # fmt: skip
    print(f"  key template step tokenissue negotiated: {', '.join(f'{k} {v}' for k, v in bench.templates.items())}")
    print("\nfirst operation of a process (untimed above; median over the workers, ms):")
    for op in ("keygen ec-p256", "keygen rsa-2048", "enroll ec-p256"):
        cells = []
        for impl in bench.impls:
            for mode in ("raw", "tokenissue"):
                got = bench.first.get((impl.name, op, mode))
                if got:
                    cells.append(f"{impl.name} {mode} {statistics.median(got) * 1e3:.1f}")
        print(f"  {op}: {', '.join(cells)}")
    print("  (tokenissue's first keygen in a process negotiates the key template; on the TPM that is three "
          "refused C_GenerateKeyPair calls first)")
    print(f"\n(total {elapsed:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "tokens", "runs": args.runs, "tmpfs": str(base), "python": platform.python_version(),
            "cpus": os.cpu_count(), "rows": rows, "templates": bench.templates, "tpm_skipped": bench.tpm_skipped,
            "samples_ms": {f"{i}|{o}|{m}": [x * 1e3 for x in v] for (i, o, m), v in bench.samples.items()},
            "first_ms": {f"{i}|{o}|{m}": [x * 1e3 for x in v] for (i, o, m), v in bench.first.items()},
            "elapsed_s": elapsed, "loadavg_end": load,
        }, indent=2) + "\n")  # fmt: skip
        print(f"saved {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
