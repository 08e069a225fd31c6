"""Every pinned version, port, key and path of the devstack, in one place."""

from __future__ import annotations

from pathlib import Path

#: livekit-server release, built with `go install .../cmd/server@<version>`.
LIVEKIT_SERVER_MODULE = "github.com/livekit/livekit-server"
LIVEKIT_SERVER_VERSION = "v1.13.5"
#: livekit-sip release. The issue pins v1.11.0, but the Go module proxy refuses every
#: livekit/sip version from v1.9.0 to v1.13.x ("not available"); v1.8.0 is the nearest
#: release it serves (see docs/devstack.md).
LIVEKIT_SIP_MODULE = "github.com/livekit/sip"
LIVEKIT_SIP_VERSION = "v1.8.0"

#: Debian packages the stack needs (binaries, and C libraries livekit-sip links with CGO).
APT_PACKAGES = (
    "redis-server",
    "sip-tester",
    "espeak-ng",
    "sox",
    "pkg-config",
    "libopus-dev",
    "libopusfile-dev",
    "libsoxr-dev",
)

HOST = "127.0.0.1"
REDIS_PORT = 6390  #: not 6379, so a system Redis does not clash
LIVEKIT_PORT = 7880  #: HTTP API and WebSocket signalling
LIVEKIT_RTC_UDP_PORT = 7882  #: WebRTC media, one muxed UDP port on loopback
SIP_PORT = 5070  #: livekit-sip signalling, UDP and TCP
SIP_RTP_PORTS = (10000, 10100)  #: livekit-sip RTP range
PHONES_PORT = 5080  #: the sipp phones (UAS), UDP
#: sipp's media port; sipp 3.6 binds it and the next even port, and every call's RTP
#: stream is sent from there.
PHONES_MEDIA_PORT = 16000
#: sipp's remote-control socket; sipp 3.6 binds it on every interface (it takes only
#: sipp's own commands, such as quit).
PHONES_CONTROL_PORT = 5081
#: The corpus phones (devstack/corpus_phones.py): a second sipp UAS with its own trunk.
CORPUS_PHONES_PORT = 5084
CORPUS_PHONES_MEDIA_PORT = 16020
CORPUS_PHONES_CONTROL_PORT = 5085

#: Fixed, public development credentials; livekit-server wants a secret of 32+ characters.
API_KEY = "devkey"
API_SECRET = "devstack-secret-not-for-production-0123456789"

LIVEKIT_URL = f"ws://{HOST}:{LIVEKIT_PORT}"
TRUNK_NAME = "devstack-phones"
#: The caller id the trunk presents (any valid number; the phones do not check it).
TRUNK_CALLER_ID = "+12127360100"
CORPUS_TRUNK_NAME = "devstack-corpus-phones"

ROOT = Path(__file__).resolve().parent.parent
#: resolved, so checkouts that link `.devstack` to one folder share one stack (same argv)
STATE_DIR = (ROOT / ".devstack").resolve()
BIN_DIR = STATE_DIR / "bin"
BUILD_DIR = STATE_DIR / "build"
RUN_DIR = STATE_DIR / "run"  #: generated configs and pid files
LOG_DIR = STATE_DIR / "logs"
AUDIO_DIR = STATE_DIR / "audio"
PHONES_DIR = STATE_DIR / "phones"  #: the phones' own logs, parsed by devstack.phones
ENV_FILE = STATE_DIR / "env"
STAMP_FILE = BIN_DIR / "versions.json"
LOCK_FILE = STATE_DIR / "lock"
SCENARIO_FILE = Path(__file__).resolve().parent / "phones.xml"
#: the generated AMD corpus (`python -m devstack corpus DIR` writes one anywhere)
CORPUS_DIR = STATE_DIR / "corpus"
CORPUS_AUDIO_DIR = STATE_DIR / "corpus-phones"  #: the clips as the corpus phones send them
CORPUS_SCENARIO_FILE = RUN_DIR / "corpus-phones.xml"
CORPUS_SOURCE_FILE = RUN_DIR / "corpus-source"  #: which corpus the corpus phones play
