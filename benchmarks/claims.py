"""Claims benchmark: claim and next-due cost at 10k, 100k and 1M contacts, both ledgers.

    .venv/bin/python benchmarks/claims.py                        # 10k,100k,1M; both backends
    .venv/bin/python benchmarks/claims.py --sizes 10k,100k --backends sqlite

Ledgers are built once, through `import_sheet` (the `dialer import` path), under
`benchmarks/.data/` (git-ignored; PostgreSQL in a cluster kept there) and reused.
Contact sheets mix US coast to coast, UK, AU and IN numbers, the US and AU 90%
first. For each backend and size, in a fresh process (its own peak RSS):

- all open:        00:00-24:00 every day, everyone is open;
- 90% closed first: 09:00-20:00 Mon-Sat at 12:00 UTC on a January Wednesday: the US
                   (07:00 in New York) and AU (20:00 in Perth) are closed, UK and IN open;
- none open:       the same hours on a Sunday.

Each claim is released (its contact back to pending) outside the timed part, so the
ledger stays as built. The baseline is the 10k ledger: the script prints the 1M/10k
ratio of every figure. Then, on PostgreSQL, on a copy of the largest ledger, 1
(baseline), 2 and 4 processes claim at once (large and small caps), each call held
20 ms and then completed: total claims/s, the highest in-flight count any claim
saw, and the client's CPU, statements and round trips per claim and per finalise.
Then `dialer import` of a 1M-row CSV on each backend (its writer process overlapping
the check), again (nothing new), and in one process, against `dialer check` of the
same file (the validation alone): wall time, CPU (and the PostgreSQL server's), peak
RSS of the command and of its process tree.
A refused or failed call is counted and printed, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / "benchmarks" / ".data"
PYTHON = sys.executable
DIALER = str(Path(PYTHON).parent / "dialer")
CAMPAIGN = "bench"

US = ["212", "718", "305", "404", "312", "214", "303", "602", "415", "213", "206", "808", "907"]
SCENARIOS = ("all open", "90% closed first", "none open")
WEDNESDAY_NOON = datetime(2026, 1, 14, 12, 0, tzinfo=UTC)
SUNDAY_NOON = datetime(2026, 1, 18, 12, 0, tzinfo=UTC)


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def label(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"


# -- sheets ---------------------------------------------------------------------------


def _closed_number(rng: random.Random) -> str:
    """US (coast to coast, Hawaii, Alaska) or AU (Sydney, Perth, mobiles: every AU zone)."""
    if rng.random() < 0.75:
        return f"+1{rng.choice(US)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
    kind = rng.randrange(3)
    if kind == 0:
        return f"+612{rng.randint(80000000, 99999999)}"
    if kind == 1:
        return f"+618{rng.randint(90000000, 99999999)}"
    return f"+614{rng.randint(10000000, 99999999)}"


def _open_number(rng: random.Random) -> str:
    """UK (London, mobiles) or IN (mobiles)."""
    kind = rng.randrange(3)
    if kind == 0:
        return f"+4420{rng.randint(70000000, 89999999)}"
    if kind == 1:
        return f"+447{rng.randint(400000000, 999999999)}"
    return f"+919{rng.randint(100000000, 899999999)}"


def write_sheet(path: Path, rows: int) -> Path:
    if path.exists():
        return path
    rng = random.Random(rows)
    closed = int(rows * 0.9)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.write("name,phone,plan\n")
        for i in range(rows):
            number = _closed_number(rng) if i < closed else _open_number(rng)
            out.write(f"Contact {i},{number},{rng.choice(('gold', 'silver'))}\n")
    tmp.rename(path)
    return path


# -- PostgreSQL: a cluster kept under benchmarks/.data/pg -----------------------------


def _outside_cluster_dir() -> Path:
    """Where the cluster lives when its owner cannot reach benchmarks/.data: a folder of
    the system's temporary directory named after this checkout, so it is kept too."""
    import hashlib

    tag = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"dialer-bench-pg-{tag}"


class Postgres:
    """A persistent cluster on loopback, built with the tests' helpers (Debian binaries)."""

    def __init__(self) -> None:
        from tests.pg import _as_owner, _bin_dir, _free_port

        self.bin, self.as_owner = _bin_dir(), _as_owner
        self.owner = "postgres" if os.geteuid() == 0 else None
        self.data = DATA / "pg" if self._owner_reaches(DATA) else _outside_cluster_dir()
        self.port = _free_port()
        self.user = self.owner or os.environ.get("USER", "postgres")

    def _owner_reaches(self, path: Path) -> bool:
        """Whether the cluster's owner can enter `path` (a checkout in a private 0700
        directory, such as `mktemp -d`, is closed to `postgres`)."""
        if self.owner is None:
            return True
        path.mkdir(parents=True, exist_ok=True)
        probe = self.as_owner(["test", "-x", str(path), "-a", "-w", str(path)], self.owner)
        return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0

    def start(self) -> None:
        DATA.mkdir(parents=True, exist_ok=True)
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            if self.owner:
                shutil.chown(self.data, self.owner, self.owner)
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.data} -c max_connections=50"
            " -c shared_buffers=256MB -c fsync=off -c synchronous_commit=off"
        )
        log = self.data / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def _run(self, tool: str, *args: str) -> None:
        cmd = self.as_owner([str(self.bin / tool), *args], self.owner)
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def database(self, name: str, *, fresh: bool = False, copy_of: str | None = None) -> str:
        """The database's URL, created when missing (`fresh`: again; `copy_of`: as a copy)."""
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists and fresh:
                conn.execute(f'DROP DATABASE "{name}"')
            if not exists or fresh:
                template = f' TEMPLATE "{copy_of}"' if copy_of else ""
                conn.execute(f'CREATE DATABASE "{name}"{template}')
        return self.url(name)

    def cpu(self) -> float:
        """CPU seconds the server has used so far: the postmaster with its exited
        backends (`cutime`, `cstime`) and every live process under it."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        total = 0
        for pid, fields in processes():
            if pid == postmaster:
                total += sum(int(value) for value in fields[11:15])  # utime..cstime
            elif int(fields[1]) == postmaster:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def exists(self, name: str) -> bool:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return found.fetchone() is not None

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


# -- child processes ------------------------------------------------------------------


def child(*args: str) -> dict[str, Any]:
    """Run this script in a fresh process: its JSON answer, wall time and peak RSS (MiB)."""
    result = measured([PYTHON, __file__, *args], dict(os.environ))
    try:
        answer: dict[str, Any] = json.loads(result.pop("output").strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        answer = {"error": result.get("error", "no answer")}
    return {**answer, **result}


def measured(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall time and peak RSS of a command (`dialer import`, `dialer check`): its own
    (`rss_mib`, from the kernel) and its process tree's (`tree_mib`: the sum over the
    command and its children, such as an import's writer, sampled every 50 ms)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, env=env, cwd=ROOT)
        tree = TreeRss(proc.pid)
        assert proc.stdout is not None
        output = proc.stdout.read().decode()
        tree.stop()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        problems = errors.read().decode()
    result: dict[str, Any] = {
        "wall": time.perf_counter() - started,
        "rss_mib": usage.ru_maxrss / 1024,
        "tree_mib": max(tree.peak / 2**20, usage.ru_maxrss / 1024),
        "rc": proc.returncode,
        "output": output,
    }
    if proc.returncode != 0:
        tail = (problems + output).strip().splitlines() or [f"exit status {proc.returncode}"]
        result["error"] = tail[-1]
    return result


def processes() -> Iterator[tuple[int, list[str]]]:
    """Every live process as (pid, the fields of /proc/PID/stat after its name: state,
    ppid, ...); `man 5 proc` numbers them from 3, so field N is `fields[N - 3]`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            yield int(entry.name), stat.rsplit(")", 1)[1].split()


class TreeRss:
    """The highest sum of resident memory over a process and its descendants, sampled."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, root: int) -> None:
        self.root, self.peak = root, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(5)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            parents: dict[int, int] = {}
            resident: dict[int, int] = {}
            for pid, fields in processes():
                parents[pid] = int(fields[1])
                resident[pid] = int(fields[21]) * self.PAGE  # rss, in pages
            total = 0
            for pid, size in resident.items():
                ancestor = pid
                while ancestor not in (self.root, 0, 1) and ancestor in parents:
                    ancestor = parents[ancestor]
                if ancestor == self.root:
                    total += size
            self.peak = max(self.peak, total)


def build(url: str, sheet: str) -> dict[str, Any]:
    """Import the sheet into the ledger once (nothing is written when it is already there)."""
    from campaign.contacts import read_sheet
    from campaign.store import open_ledger
    from campaign.store.imports import import_sheet

    ledger = open_ledger(url)
    started = time.perf_counter()
    summary, _ = import_sheet(
        ledger, read_sheet(Path(sheet)), campaign=CAMPAIGN, region="US", default_region="US"
    )
    if ledger.is_postgres:
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return {"new": summary.new, "seconds": time.perf_counter() - started}


def scenario_window(name: str) -> tuple[Any, datetime]:
    from campaign.windows import CallingWindow

    if name == "all open":
        return (
            CallingWindow(
                start=0, end=24 * 60, days=frozenset(range(7)), override_legal_limits=True
            ),
            WEDNESDAY_NOON,
        )
    if name == "90% closed first":
        return CallingWindow(), WEDNESDAY_NOON
    return CallingWindow(), SUNDAY_NOON


def claims(url: str, n: int) -> dict[str, Any]:
    """Claim p50/p95 and next-due per scenario, each claim released untimed."""
    from campaign.outcomes import ContactStatus, Outcome
    from campaign.pacing import TokenBucket
    from campaign.store import dialing as store
    from campaign.store import open_ledger

    ledger = open_ledger(url)
    campaign = store.campaign_id(ledger, CAMPAIGN)
    contacts = store.contact_count(ledger, campaign)
    bucket = TokenBucket(rate=1e9)
    results: dict[str, Any] = {"contacts": contacts}
    for name in SCENARIOS:
        window, now = scenario_window(name)
        times, refused, reasons = [], 0, set()
        for _ in range(n):
            started = time.perf_counter()
            try:
                result = store.claim_next(
                    ledger,
                    campaign,
                    campaign_name=CAMPAIGN,
                    dialer_id="bench",
                    now=now,
                    wall=time.time(),
                    max_concurrent=1_000_000,
                    bucket=bucket,
                    window=window,
                )
            except Exception:  # a refused claim is counted, not raised
                refused += 1
                continue
            times.append(time.perf_counter() - started)
            reasons.add(result.reason)
            if result.claimed is not None:
                store.finalise_attempt(
                    ledger,
                    result.claimed.attempt_id,
                    outcome=Outcome.CANCELLED,
                    ended_at=now,
                    decide=lambda _o, _d, _s: (ContactStatus.PENDING, None),
                )
        due_times = []
        for _ in range(max(5, n // 10)):
            started = time.perf_counter()
            store.next_due(ledger, campaign, window=window, now=now)
            due_times.append(time.perf_counter() - started)
        times.sort()
        results[name] = {
            "p50": statistics.median(times) if times else None,
            "p95": times[int(len(times) * 0.95) - 1] if times else None,
            "next_due": statistics.median(due_times),
            "reasons": sorted(reasons),
            "refused": refused,
        }
    return results


class RoundTrips:
    """What a ledger call sends PostgreSQL: its statements, and its round trips (each
    statement, a transaction's BEGIN and COMMIT, the ping of a connection left idle)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        from campaign.store.db import PING_IF_IDLE

        self.statements = self.round_trips = 0

        def statement(*_args: Any) -> None:
            self.statements += 1
            self.round_trips += 1

        def ends(*_args: Any) -> None:
            self.round_trips += 1

        def pinged(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            # the pool pings a connection that sat idle (`PING_IF_IDLE`), as it is taken
            if time.monotonic() - record.info.get("checked_in", 0.0) >= PING_IF_IDLE:
                self.round_trips += 1

        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "begin", ends)  # psycopg sends BEGIN with the first statement
        event.listen(engine, "commit", ends)
        event.listen(engine, "rollback", ends)
        event.listen(engine.pool, "checkout", pinged)

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.round_trips


def concurrent_worker(url: str, seconds: float, cap: int) -> dict[str, Any]:
    """Say "ready", read the start time, then claim for `seconds` from it; each call is
    held 20 ms, then finalised as a completed call (so every claim takes a fresh
    contact, as in a real campaign). Also the client's CPU, statements and round trips
    of each claim that took a contact and of each finalise."""
    from campaign.outcomes import ContactStatus, Outcome
    from campaign.pacing import TokenBucket
    from campaign.store import dialing as store
    from campaign.store import open_ledger

    ledger = open_ledger(url, migrate=False)
    campaign = store.campaign_id(ledger, CAMPAIGN)
    window, now = scenario_window("all open")
    bucket = TokenBucket(rate=1e9)
    held: deque[tuple[float, int]] = deque()
    claimed = capped = refused = 0
    highest = 0
    trips = RoundTrips(ledger.engine)
    #: per kind (claim: those that took a contact; finalise): count, CPU s, statements, trips
    cost = {kind: [0, 0.0, 0, 0] for kind in ("claim", "finalise")}

    def account(kind: str, cpu0: float, before: tuple[int, int]) -> None:
        statements, round_trips = trips.snapshot()
        row = cost[kind]
        row[0] += 1
        row[1] += time.process_time() - cpu0
        row[2] += statements - before[0]
        row[3] += round_trips - before[1]

    def release(attempt: int) -> None:
        cpu0, before = time.process_time(), trips.snapshot()
        store.finalise_attempt(
            ledger,
            attempt,
            outcome=Outcome.ANSWERED,
            ended_at=now,
            decide=lambda _o, _d, _s: (ContactStatus.COMPLETED, None),
        )
        account("finalise", cpu0, before)

    print("ready", flush=True)
    start_at = float(sys.stdin.readline() or "0")
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.time() < end:
        while held and time.monotonic() - held[0][0] >= 0.02:
            release(held.popleft()[1])
        cpu0, before = time.process_time(), trips.snapshot()
        try:
            result = store.claim_next(
                ledger,
                campaign,
                campaign_name=CAMPAIGN,
                dialer_id=f"bench-{os.getpid()}",
                now=now,
                wall=time.time(),
                max_concurrent=cap,
                bucket=bucket,
                window=window,
            )
        except Exception:  # a refused claim is counted, not raised
            refused += 1
            continue
        highest = max(highest, result.in_flight)
        if result.claimed is not None:
            account("claim", cpu0, before)
            claimed += 1
            held.append((time.monotonic(), result.claimed.attempt_id))
        elif result.reason == "capped":
            capped += 1
            time.sleep(0.002)
    for _, attempt in held:
        release(attempt)
    return {
        "claimed": claimed,
        "capped": capped,
        "refused": refused,
        "highest": highest,
        "cost": cost,
    }


# -- the run --------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--claims", type=int, default=200, help="claims per scenario")
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency run")
    parser.add_argument("--import-rows", default="1M", help="rows for the import run (0: skip)")
    parser.add_argument(
        "--parts", default="claims,concurrency,import", help="which measurements to run"
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "build":
            answer = build(rest[0], rest[1])
        elif kind == "import":
            answer = import_worker(rest[0], rest[1], rest[2])
        elif kind == "claims":
            answer = claims(rest[0], int(rest[1]))
        else:
            answer = concurrent_worker(rest[0], float(rest[1]), int(rest[2]))
        print(json.dumps(answer))
        return

    sizes = [parse_size(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    DATA.mkdir(parents=True, exist_ok=True)
    pg = Postgres() if "postgresql" in backends else None
    if pg is not None:
        try:
            pg.start()
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            print(f"PostgreSQL refused to start ({exc}): {detail.decode(errors='replace')[-300:]}")
            print("continuing without PostgreSQL")
            backends, pg = [b for b in backends if b != "postgresql"], None
    try:
        run(args, sizes, backends, pg)
    finally:
        if pg is not None:
            pg.stop()


def ledger_url(backend: str, size: int, pg: Postgres | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{DATA / f'claims-{label(size)}.db'}"
    assert pg is not None
    return pg.database(f"claims_{label(size).lower()}")


def run(
    args: argparse.Namespace, sizes: list[int], backends: list[str], pg: Postgres | None
) -> None:
    big = max(sizes)
    if "claims" in args.parts:
        claim_table(args, sizes, backends, pg)
    if pg is not None and "concurrency" in args.parts:
        concurrency(args, pg, big)
    rows = parse_size(args.import_rows)
    if rows and "import" in args.parts:
        imports(rows, backends, pg)


def claim_table(
    args: argparse.Namespace, sizes: list[int], backends: list[str], pg: Postgres | None
) -> None:
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for size in sizes:
        sheet = write_sheet(DATA / f"contacts-{label(size)}.csv", size)
        for backend in backends:
            url = ledger_url(backend, size, pg)
            built = child("--worker", "build", url, str(sheet))
            if built.get("new"):
                took = f"{built['seconds']:.1f} s"
                print(f"built {backend} {label(size)}: {built['new']} contacts in {took}")
            elif "error" in built:
                print(f"building {backend} {label(size)} failed: {built['error']}")
            table[backend, size] = child("--worker", "claims", url, str(args.claims))

    print("\n| contacts | scenario | backend | claim p50 | claim p95 | next due | peak RSS |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for size in sizes:
        for name in SCENARIOS:
            for backend in backends:
                found = table[backend, size]
                if "error" in found:
                    print(f"| {label(size)} | {name} | {backend} | refused: {found['error']} |")
                    continue
                row = found[name]
                refused = f" ({row['refused']} refused)" if row["refused"] else ""
                print(
                    f"| {label(size)} | {name} | {backend} | {ms(row['p50'])}{refused}"
                    f" | {ms(row['p95'])} | {ms(row['next_due'])} | {found['rss_mib']:.0f} MiB |"
                )
    small, big = min(sizes), max(sizes)
    if small != big:
        print(f"\nratio {label(big)}/{label(small)} (baseline: the {label(small)} ledger)")
        for name in SCENARIOS:
            for backend in backends:
                a, b = table[backend, small], table[backend, big]
                if "error" in a or "error" in b:
                    continue
                claim = (b[name]["p50"] or 0) / max(a[name]["p50"] or 1e-9, 1e-9)
                due = b[name]["next_due"] / max(a[name]["next_due"], 1e-9)
                print(f"  {name:17} {backend:10} claim p50 x{claim:.2f}  next due x{due:.2f}")


def concurrency(args: argparse.Namespace, pg: Postgres, size: int) -> None:
    if not pg.exists(f"claims_{label(size).lower()}"):  # `--parts concurrency` on its own
        sheet = write_sheet(DATA / f"contacts-{label(size)}.csv", size)
        built = child("--worker", "build", ledger_url("postgresql", size, pg), str(sheet))
        print(f"built postgresql {label(size)}: {built.get('new', built.get('error'))}")
    # on a copy of the ledger: the calls made here complete their contacts
    copy = f"claims_{label(size).lower()}_calls"
    url = pg.database(copy, fresh=True, copy_of=f"claims_{label(size).lower()}")
    try:
        concurrent_runs(args, url, size)
    finally:
        pg.drop(copy)


def concurrent_runs(args: argparse.Namespace, url: str, size: int) -> None:
    print(f"\nPostgreSQL, {label(size)} contacts, all open, each call held 20 ms then completed")
    print("(baseline: one process; 'highest in flight' is the count each claim saw under lock):")
    print("CPU: the client's per claim that took a contact and per finalise; statements and")
    print("round trips (BEGIN, statements, COMMIT, a ping of an idle connection) each.")
    print(
        "| processes | cap | claims/s (total) | highest in flight | capped | refused"
        " | claim CPU | finalise CPU | claim stmts / trips | finalise stmts / trips | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline: dict[int, float] = {}
    for cap in (1000, 3):
        for processes in (1, 2, 4):
            worker_args = [str(args.seconds), str(cap)]
            procs = [
                subprocess.Popen(
                    [PYTHON, __file__, "--worker", "concurrent", url, *worker_args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=ROOT,
                )
                for _ in range(processes)
            ]
            # Every worker starts at once, after the slowest has connected (a loaded
            # machine can take seconds to start a Python process).
            for proc in procs:
                assert proc.stdout is not None
                proc.stdout.readline()
            start_at = f"{time.time() + 0.5}\n".encode()
            answers = []
            for proc in procs:
                out, err = proc.communicate(start_at)
                try:
                    answers.append(json.loads(out.decode().strip().splitlines()[-1]))
                except (IndexError, json.JSONDecodeError):
                    tail = (err.decode().strip().splitlines() or ["no output"])[-1]
                    answers.append({"claimed": 0, "capped": 0, "refused": 1, "highest": 0})
                    print(f"  a worker failed: {tail}")
            rate = sum(a["claimed"] for a in answers) / args.seconds
            baseline.setdefault(cap, rate)
            print(
                f"| {processes} | {cap} | {rate:.0f} (x{rate / max(baseline[cap], 1e-9):.2f})"
                f" | {max(a['highest'] for a in answers)}"
                f" | {sum(a['capped'] for a in answers)} | {sum(a['refused'] for a in answers)}"
                f" | {_costs(answers)} | {os.getloadavg()[0]:.1f} |"
            )


def _costs(answers: list[dict[str, Any]]) -> str:
    """CPU per claim and per finalise over every worker; statements and round trips each."""
    per: dict[str, list[float]] = {}
    for kind in ("claim", "finalise"):
        rows = [a["cost"][kind] for a in answers if "cost" in a]
        n = sum(r[0] for r in rows)
        per[kind] = [sum(r[i] for r in rows) / max(n, 1) for i in (1, 2, 3)]
    claim, finalise = per["claim"], per["finalise"]
    return (
        f"{claim[0] * 1000:.2f} ms | {finalise[0] * 1000:.2f} ms"
        f" | {claim[1]:.1f} / {claim[2]:.1f} | {finalise[1]:.1f} / {finalise[2]:.1f}"
    )


def imports(rows: int, backends: list[str], pg: Postgres | None) -> None:
    sheet = write_sheet(DATA / f"contacts-{label(rows)}.csv", rows)
    env = dict(os.environ)
    print(
        f"\n`dialer import` of {label(rows)} rows. Baseline: `dialer check`, the validation"
        " alone (in one process). `dialer import` writes through a writer process while it"
        " checks; `in one process` is the same import with `parallel=False` (this script's"
        " worker: no CLI). CPU: user + sys of the command and its children; RSS: the"
        " command's own peak and its process tree's (the writer counted); load: the 1-minute"
        " load average as each job ended."
    )
    print(
        "| backend | job | wall | CPU | server CPU | peak RSS | tree RSS | ratio to check | load |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    check = timed([DIALER, "check", str(sheet), "--region", "US"], env)
    print(
        f"| — | dialer check | {check['wall']:.1f} s | {check['cpu']:.1f} s | —"
        f" | {check['rss_mib']:.0f} MiB | {check['tree_mib']:.0f} MiB | x1.00"
        f" | {check['load']:.1f} |"
    )
    for backend in backends:
        server = pg if backend == "postgresql" else None
        results = []
        for fresh in (True, False):  # the second time: nothing new (idempotent)
            url = import_target(backend, pg, fresh=fresh)
            job = [DIALER, "import", str(sheet), "--campaign", "imported", "--region", "US"]
            what = "dialer import" if fresh else "import again"
            results.append((what, timed([*job, "--db", url], env, server)))
        url = import_target(backend, pg, fresh=True)
        serial = [PYTHON, __file__, "--worker", "import", url, str(sheet), "serial"]
        results.append(("in one process", timed(serial, env, server)))
        for what, result in results:
            if "error" in result:
                print(f"| {backend} | {what} | refused: {result['error']} | | | | | | |")
                continue
            server_cpu = f"{result['server_cpu']:.1f} s" if "server_cpu" in result else "—"
            print(
                f"| {backend} | {what} | {result['wall']:.1f} s | {result['cpu']:.1f} s"
                f" | {server_cpu} | {result['rss_mib']:.0f} MiB | {result['tree_mib']:.0f} MiB"
                f" | x{result['wall'] / check['wall']:.2f} | {result['load']:.1f} |"
            )
        if backend == "sqlite":
            for leftover in DATA.glob("import.db*"):
                leftover.unlink()
        elif pg is not None:
            pg.drop("import_bench")


def import_target(backend: str, pg: Postgres | None, *, fresh: bool) -> str:
    """The import's ledger: emptied when `fresh`."""
    if backend == "sqlite":
        if fresh:
            for leftover in DATA.glob("import.db*"):
                leftover.unlink()
        return f"sqlite:///{DATA / 'import.db'}"
    assert pg is not None
    return pg.database("import_bench", fresh=fresh)


def import_worker(url: str, sheet: str, how: str) -> dict[str, Any]:
    """`dialer import`'s work without the CLI, in one process or with the writer."""
    from campaign.contacts import read_sheet
    from campaign.store import open_ledger
    from campaign.store.imports import import_sheet

    ledger = open_ledger(url)
    summary, _ = import_sheet(
        ledger,
        read_sheet(Path(sheet)),
        campaign="imported",
        region="US",
        default_region="US",
        parallel=how == "parallel",
    )
    return {"new": summary.new}


def timed(cmd: list[str], env: dict[str, str], server: Postgres | None = None) -> dict[str, Any]:
    """`measured`, plus the command's CPU time (user + sys, its children's included), the
    load as it ended and, given the PostgreSQL server, the server's CPU meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server.cpu() if server is not None else 0.0
    result = measured(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if server is not None:
        result["server_cpu"] = server.cpu() - server_before
    result["load"] = os.getloadavg()[0]
    return result


if __name__ == "__main__":
    main()
