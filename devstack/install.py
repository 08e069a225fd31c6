"""Install what the stack needs, idempotently: Debian packages, then the LiveKit binaries.

A second run with everything in place returns in well under a second: the Debian
packages are checked with one `dpkg-query`, the binaries against a stamp file that
records the version each was built from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from devstack import config
from devstack.errors import DevstackError, tail


def say(message: str) -> None:
    """A progress line; the first run takes minutes, so say what is happening."""
    print(f"devstack: {message}", file=sys.stderr, flush=True)


def install() -> None:
    """Make sure every Debian package and both LiveKit binaries are present."""
    _install_apt_packages()
    stamp = _read_stamp()
    go = _find_go() if _needs_build(stamp) else ""
    if not _built(stamp, "livekit-server", config.LIVEKIT_SERVER_VERSION):
        _build_server(go)
        stamp["livekit-server"] = config.LIVEKIT_SERVER_VERSION
        _write_stamp(stamp)
    if not _built(stamp, "livekit-sip", config.LIVEKIT_SIP_VERSION):
        _build_sip(go)
        stamp["livekit-sip"] = config.LIVEKIT_SIP_VERSION
        _write_stamp(stamp)


def binary(name: str) -> Path:
    """Path of a built binary (`livekit-server` or `livekit-sip`)."""
    return config.BIN_DIR / name


def _missing_apt_packages() -> list[str]:
    if shutil.which("dpkg-query") is None:
        raise DevstackError("dpkg-query not found: devstack installs its parts with apt (Debian)")
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *config.APT_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.endswith(" installed") and line.split()
    }
    return [name for name in config.APT_PACKAGES if name not in installed]


def _install_apt_packages() -> None:
    missing = _missing_apt_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise DevstackError(
            "missing Debian packages (run as root, or install them): " + " ".join(missing)
        )
    say(f"installing Debian packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = config.LOG_DIR / "apt.log"
    _run(["apt-get", "update"], log=log, env=env, what="apt-get update")
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        log=log,
        env=env,
        what="apt-get install",
    )


def _read_stamp() -> dict[str, str]:
    try:
        data = json.loads(config.STAMP_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_stamp(stamp: dict[str, str]) -> None:
    config.STAMP_FILE.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def _built(stamp: dict[str, str], name: str, version: str) -> bool:
    return stamp.get(name) == version and os.access(binary(name), os.X_OK)


def _needs_build(stamp: dict[str, str]) -> bool:
    return not (
        _built(stamp, "livekit-server", config.LIVEKIT_SERVER_VERSION)
        and _built(stamp, "livekit-sip", config.LIVEKIT_SIP_VERSION)
    )


def _find_go() -> str:
    # The official tarball installs to /usr/local/go, which is not always on PATH.
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin") or ""
    if not go:
        raise DevstackError(
            "Go not found (need the version livekit's go.mod asks for, 1.26 or newer): "
            "install it from https://go.dev/dl and put it on PATH"
        )
    return go


def _go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "1"}


def _build_server(go: str) -> None:
    version = config.LIVEKIT_SERVER_VERSION
    say(f"building livekit-server {version} (first run takes minutes)...")
    started = time.monotonic()
    gobin = config.BUILD_DIR / "gobin"
    gobin.mkdir(parents=True, exist_ok=True)
    _run(
        [go, "install", f"{config.LIVEKIT_SERVER_MODULE}/cmd/server@{version}"],
        log=config.LOG_DIR / "build-livekit-server.log",
        env={**_go_env(), "GOBIN": str(gobin)},
        what=f"building livekit-server {version}",
    )
    # The module's command is named `server`; give it a name that says what it is.
    shutil.move(gobin / "server", binary("livekit-server"))
    say(f"built livekit-server {version} in {time.monotonic() - started:.0f} s")


def _build_sip(go: str) -> None:
    version = config.LIVEKIT_SIP_VERSION
    say(f"building livekit-sip {version} (first run takes minutes)...")
    started = time.monotonic()
    # `go install ...@v1.8.0` fails: it loads the module's version list for deprecation
    # notices and the proxy refuses that list. A throwaway module that requires the
    # release and builds its command needs no version list.
    workdir = config.BUILD_DIR / "sip"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log = config.LOG_DIR / "build-livekit-sip.log"
    env = _go_env()
    what = f"building livekit-sip {version}"
    _run([go, "mod", "init", "devstack-sipbuild"], log=log, env=env, what=what, cwd=workdir)
    _run(
        [go, "get", f"{config.LIVEKIT_SIP_MODULE}/cmd/livekit-sip@{version}"],
        log=log,
        env=env,
        what=what,
        cwd=workdir,
    )
    _run(
        [
            go,
            "build",
            "-o",
            str(binary("livekit-sip")),
            f"{config.LIVEKIT_SIP_MODULE}/cmd/livekit-sip",
        ],
        log=log,
        env=env,
        what=what,
        cwd=workdir,
    )
    say(f"built livekit-sip {version} in {time.monotonic() - started:.0f} s")


def _run(
    cmd: list[str],
    *,
    log: Path,
    env: dict[str, str],
    what: str,
    cwd: Path | None = None,
) -> None:
    """Run a build step, appending its output to `log`; fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    config.BIN_DIR.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        result = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False
        )
    if result.returncode != 0:
        raise DevstackError(f"{what} failed (exit {result.returncode}); {log}:\n{tail(log)}")


def installed_versions() -> list[str]:
    """`name version` of each built binary, from the stamp file."""
    return [f"{name} {version}" for name, version in _read_stamp().items()]
