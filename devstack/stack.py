"""Start, check and stop the stack: Redis, livekit-server, livekit-sip and the sipp phones.

Each part runs in its own session, detached from whoever started it, with its pid in
`.devstack/run/<part>.pid` and its output in `.devstack/logs/<part>.log`. `up` reuses
a part that is already running and healthy, so several test sessions can share one
stack; `down` stops only what a pid file names, and only if that pid still runs the
part's own binary.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from livekit import api

from devstack import audio, config, corpus_phones, install
from devstack.errors import DevstackError, tail

say = install.say


@dataclass(frozen=True)
class Part:
    """One process of the stack and how to tell that it is healthy."""

    name: str
    argv: tuple[str, ...]
    healthy: Callable[[], bool]
    start_timeout: float
    cwd: Path | None = None
    #: Files whose content the running process depends on (configs, scenario, binaries).
    inputs: tuple[Path, ...] = ()

    @property
    def pid_file(self) -> Path:
        return config.RUN_DIR / f"{self.name}.pid"

    @property
    def fingerprint_file(self) -> Path:
        return config.RUN_DIR / f"{self.name}.fingerprint"

    def fingerprint(self) -> str:
        """Changes when the command or any input changes, so `up` restarts the part."""
        digest = hashlib.sha256("\0".join(self.argv).encode())
        for path in self.inputs:
            digest.update(path.read_bytes() if path.exists() else b"")
        return digest.hexdigest()

    def is_current(self) -> bool:
        try:
            return self.fingerprint_file.read_text().strip() == self.fingerprint()
        except OSError:
            return False

    @property
    def log_file(self) -> Path:
        return config.LOG_DIR / f"{self.name}.log"


def parts() -> list[Part]:
    """The stack's parts, in start order (each needs the ones before it)."""
    return [
        Part(
            "redis",
            (
                "redis-server",
                "--bind",
                config.HOST,
                "--port",
                str(config.REDIS_PORT),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(config.RUN_DIR),
            ),
            _redis_healthy,
            10,
        ),
        Part(
            "livekit-server",
            (str(install.binary("livekit-server")), "--config", str(_livekit_config())),
            _livekit_healthy,
            30,
            inputs=(_livekit_config(), config.STAMP_FILE),
        ),
        Part(
            "livekit-sip",
            (str(install.binary("livekit-sip")), "--config", str(_sip_config())),
            lambda: _sip_options_ok(config.SIP_PORT),
            30,
            inputs=(_sip_config(), config.STAMP_FILE),
        ),
        Part(
            "phones",
            (
                "sipp",
                "-sf",
                str(_scenario()),
                "-i",
                config.HOST,
                "-p",
                str(config.PHONES_PORT),
                "-mi",
                config.HOST,
                "-mp",
                str(config.PHONES_MEDIA_PORT),
                "-trace_logs",
                "-log_file",
                str(config.PHONES_DIR / "phones.log"),
                "-log_overwrite",
                "false",  # the phones' log outlives a restart of the phones
                "-ringbuffer_files",
                "2",  # keep the SIP message trace bounded on a long-lived stack
                "-ringbuffer_size",
                "20000000",
                "-trace_msg",
                "-message_file",
                str(config.PHONES_DIR / "messages.log"),
                "-cp",
                str(config.PHONES_CONTROL_PORT),
                "-trace_err",
                "-error_file",
                str(config.PHONES_DIR / "errors.log"),
                "-nostdin",
            ),
            lambda: _sip_options_ok(config.PHONES_PORT),
            10,
            cwd=config.AUDIO_DIR,  # the scenario names its audio files relative to here
            inputs=(_scenario(), config.AUDIO_DIR / "recordings.json"),
        ),
        Part(
            "corpus-phones",
            (
                "sipp",
                "-sf",
                str(config.CORPUS_SCENARIO_FILE),
                "-i",
                config.HOST,
                "-p",
                str(config.CORPUS_PHONES_PORT),
                "-mi",
                config.HOST,
                "-mp",
                str(config.CORPUS_PHONES_MEDIA_PORT),
                "-trace_logs",
                "-log_file",
                str(corpus_phones.log_path()),
                "-log_overwrite",
                "false",
                "-cp",
                str(config.CORPUS_PHONES_CONTROL_PORT),
                "-trace_err",
                "-error_file",
                str(config.PHONES_DIR / "corpus-errors.log"),
                "-nostdin",
            ),
            lambda: _sip_options_ok(config.CORPUS_PHONES_PORT),
            30,  # sipp reads every clip before it answers
            cwd=config.CORPUS_AUDIO_DIR,
            inputs=(config.CORPUS_SCENARIO_FILE, config.CORPUS_AUDIO_DIR / "clips.json"),
        ),
    ]


def ensure_corpus_trunk() -> str:
    """The corpus phones' outbound trunk id (created if another checkout's `up` did not)."""
    return asyncio.run(_ensure_trunk(config.CORPUS_TRUNK_NAME, config.CORPUS_PHONES_PORT))


def serve_corpus(directory: Path) -> list[str]:
    """Make the corpus phones play the corpus in `directory` (restarting only them)."""
    corpus_phones.set_source(directory)
    return up()


def up() -> list[str]:
    """Install, start every part that is not already running, and write `.devstack/env`.

    Returns the names of the parts this call started (empty if the stack was already up).
    """
    for folder in (config.RUN_DIR, config.LOG_DIR, config.PHONES_DIR, config.AUDIO_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    with _lock():
        install.install()
        audio.generate()
        corpus_phones.prepare()
        started: list[str] = []
        try:
            for part in parts():
                # Once a part (re)starts, the parts that depend on it restart too; so
                # does a part whose config, scenario or binary changed since it started.
                if not started and _running(part) and part.is_current() and part.healthy():
                    continue
                _start(part)
                started.append(part.name)
            try:
                trunk_id = asyncio.run(_ensure_trunk(config.TRUNK_NAME, config.PHONES_PORT))
                corpus_trunk_id = asyncio.run(
                    _ensure_trunk(config.CORPUS_TRUNK_NAME, config.CORPUS_PHONES_PORT)
                )
            except (OSError, aiohttp.ClientError, api.TwirpError) as exc:
                raise DevstackError(f"creating the outbound trunk failed: {exc}") from None
        except BaseException:
            # Leave nothing half-started behind; parts that were already up stay up.
            for name in reversed(started):
                _stop(next(p for p in parts() if p.name == name))
            raise
        _write_env(trunk_id, corpus_trunk_id)
    if started:
        say(f"started {', '.join(started)}; environment in {config.ENV_FILE}")
    else:
        say("stack already up")
    return started


def down(names: list[str] | None = None) -> list[str]:
    """Stop the named parts (default: all), by pid, in reverse start order."""
    stopped = []
    with _lock():
        for part in reversed(parts()):
            if names is not None and part.name not in names:
                continue
            if _stop(part):
                stopped.append(part.name)
        if names is None:
            config.ENV_FILE.unlink(missing_ok=True)
    return stopped


def status() -> dict[str, str]:
    """Each part's state: `up (pid N)`, `unhealthy (pid N)` or `down`."""
    result = {}
    for part in parts():
        pid = _pid(part)
        if pid is None:
            result[part.name] = "down"
        elif part.healthy():
            result[part.name] = f"up (pid {pid})"
        else:
            result[part.name] = f"unhealthy (pid {pid})"
    return result


def is_up() -> bool:
    """Whether every part runs and is healthy and the env file exists."""
    return config.ENV_FILE.exists() and all(s.startswith("up") for s in status().values())


def env_values(trunk_id: str, corpus_trunk_id: str) -> dict[str, str]:
    """The variables the dialer, the agent and the tests need to reach this stack
    (`DEVSTACK_CORPUS_TRUNK_ID` reaches the corpus phones)."""
    return {
        "LIVEKIT_URL": config.LIVEKIT_URL,
        "LIVEKIT_API_KEY": config.API_KEY,
        "LIVEKIT_API_SECRET": config.API_SECRET,
        "SIP_OUTBOUND_TRUNK_ID": trunk_id,
        "DEVSTACK_CORPUS_TRUNK_ID": corpus_trunk_id,
    }


def _write_env(trunk_id: str, corpus_trunk_id: str) -> None:
    lines = [f"{key}={value}" for key, value in env_values(trunk_id, corpus_trunk_id).items()]
    tmp = config.ENV_FILE.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(config.ENV_FILE)


@contextmanager
def _lock() -> Iterator[None]:
    """One `up`/`down` at a time, across processes (test sessions run side by side)."""
    config.STATE_DIR.mkdir(parents=True, exist_ok=True)
    with config.LOCK_FILE.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _start(part: Part) -> None:
    _stop(part)  # a stale or unhealthy process of ours goes first
    say(f"starting {part.name}...")
    with part.log_file.open("a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {part.name}\n")
        log.flush()
        try:
            proc = subprocess.Popen(
                part.argv,
                cwd=part.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if part.name.endswith("phones") else log,
                stderr=log,
                start_new_session=True,  # outlives `python -m devstack up`
            )
        except OSError as exc:
            raise DevstackError(f"{part.name} did not start: {exc}") from None
    _CHILDREN[proc.pid] = proc
    part.pid_file.write_text(f"{proc.pid}\n")
    part.fingerprint_file.write_text(part.fingerprint() + "\n")
    deadline = time.monotonic() + part.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevstackError(
                f"{part.name} exited with code {proc.returncode} while starting; {_logs(part)}"
            )
        if part.healthy():
            return
        time.sleep(0.2)
    _stop(part)
    raise DevstackError(
        f"{part.name} did not become healthy within {part.start_timeout:.0f} s; {_logs(part)}"
    )


def _logs(part: Part) -> str:
    text = f"{part.log_file}:\n{tail(part.log_file)}"
    if part.name.endswith("phones"):
        # sipp writes its complaints to its error file, not to stderr.
        errors = config.PHONES_DIR / (
            "errors.log" if part.name == "phones" else "corpus-errors.log"
        )
        text += f"\n{errors}:\n{tail(errors, 5)}"
    return text


#: Processes this interpreter started, so that stopping them also reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _pid(part: Part) -> int | None:
    """The part's pid if its pid file names a live process running the part's binary."""
    try:
        pid = int(part.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in {"Z", "X"}:
        _reap(pid)
        return None
    # A recycled pid runs something else: not ours.
    if not cmdline or _exe_name(cmdline[0].decode(errors="replace")) != Path(part.argv[0]).name:
        return None
    return pid


def _exe_name(arg0: str) -> str:
    # redis-server rewrites its title to "redis-server 127.0.0.1:6390".
    return Path(arg0.split(" ", 1)[0]).name


def _running(part: Part) -> bool:
    return _pid(part) is not None


def _stop(part: Part) -> bool:
    """Stop the part if its pid file names it; True if a process was stopped."""
    pid = _pid(part)
    stopped = False
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid(part) == pid:
            time.sleep(0.1)
        if _pid(part) == pid:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(pid)
        stopped = True
    part.pid_file.unlink(missing_ok=True)
    part.fingerprint_file.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _CHILDREN[pid] = proc


def _scenario() -> Path:
    """The phones' scenario, copied into the state folder so every checkout sharing that
    folder starts sipp with the same command line (and restarts it only on a real change)."""
    path = config.RUN_DIR / "phones.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    content = config.SCENARIO_FILE.read_bytes()
    if not path.exists() or path.read_bytes() != content:
        path.write_bytes(content)
    return path


def _livekit_config() -> Path:
    path = config.RUN_DIR / "livekit.yaml"
    path.write_text(
        f"""\
# generated by devstack; see devstack/config.py
port: {config.LIVEKIT_PORT}
bind_addresses: [{config.HOST}]
keys:
  {config.API_KEY}: {config.API_SECRET}
redis:
  address: {config.HOST}:{config.REDIS_PORT}
rtc:
  udp_port: {config.LIVEKIT_RTC_UDP_PORT}
  tcp_port: 0  # ICE/TCP would listen on every interface; loopback needs only UDP
  node_ip: {config.HOST}
  use_external_ip: false
  enable_loopback_candidate: true
  ips:
    includes: [{config.HOST}/32]
logging:
  level: info
"""
    )
    return path


def _sip_config() -> Path:
    path = config.RUN_DIR / "sip.yaml"
    start, end = config.SIP_RTP_PORTS
    path.write_text(
        f"""\
# generated by devstack; see devstack/config.py
api_key: {config.API_KEY}
api_secret: {config.API_SECRET}
ws_url: {config.LIVEKIT_URL}
redis:
  address: {config.HOST}:{config.REDIS_PORT}
sip_port: {config.SIP_PORT}
listen_ip: {config.HOST}
nat_1_to_1_ip: {config.HOST}
rtp_port: {start}-{end}
# a closed call's RTP port drains for 30 s by default; short calls back to back
# would soon use up a small range
rtp_draining_idle_timeout: 2s
rtp_draining_duration: 10s
# livekit-sip refuses calls ("cpu exhausted") above 90 % CPU by default; a shared test
# machine is often that busy, and a dev stack should still answer
max_cpu_utilization: 1.0
logging:
  level: info
"""
    )
    return path


def _redis_healthy() -> bool:
    try:
        with socket.create_connection((config.HOST, config.REDIS_PORT), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _livekit_healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://{config.HOST}:{config.LIVEKIT_PORT}/", timeout=1) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _sip_options_ok(port: int) -> bool:
    """Send a SIP OPTIONS over UDP and accept any SIP response as a sign of life."""
    call_id = uuid.uuid4().hex
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((config.HOST, 0))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{config.HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {config.HOST}:{local_port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:devstack@{config.HOST}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{config.HOST}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.settimeout(1)
        try:
            sock.sendto(request.encode(), (config.HOST, port))
            data = sock.recv(4096)
        except OSError:
            return False
    return data.startswith(b"SIP/2.0 ")


async def _ensure_trunk(name: str, port: int) -> str:
    """The outbound trunk to the phones on `port`: reuse ours if it exists, else create it."""
    address = f"{config.HOST}:{port}"
    async with api.LiveKitAPI(config.LIVEKIT_URL, config.API_KEY, config.API_SECRET) as lk:
        existing = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        for trunk in existing.items:
            if trunk.name == name and trunk.address == address:
                return str(trunk.sip_trunk_id)
        trunk = await lk.sip.create_outbound_trunk(
            api.CreateSIPOutboundTrunkRequest(
                trunk=api.SIPOutboundTrunkInfo(
                    name=name,
                    address=address,
                    numbers=[config.TRUNK_CALLER_ID],
                    transport=api.SIPTransport.SIP_TRANSPORT_UDP,
                )
            )
        )
        return str(trunk.sip_trunk_id)
