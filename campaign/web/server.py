"""`dialer serve`: the desk and the API on uvicorn, and the runner beside them.

The runner is the campaign scheduler's service: it fires the schedules and takes
the desk's start requests. Any number of replicas may share one PostgreSQL ledger:
each request is taken by one of them, each campaign run holds the run lock, and
claims are serialised in the ledger. SIGTERM or SIGINT stops the web server, then
lets runs in flight finish their calls before the process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import uvicorn

from campaign.config import Settings
from campaign.scheduler import campaign_scheduler
from campaign.web.app import create_app

logger = logging.getLogger(__name__)


def serve(
    settings: Settings,
    *,
    database_url: str | None = None,
    campaigns_dir: Path,
    host: str | None = None,
    port: int | None = None,
    runner: bool = True,
) -> None:
    """Serve until SIGTERM/SIGINT; then drain the runs in flight."""
    scheduler = campaign_scheduler(settings, database_url=database_url, campaigns_dir=campaigns_dir)
    app = create_app(scheduler.ledger, settings, scheduler)
    config = uvicorn.Config(
        app,
        host=host or settings.desk_host,
        port=settings.desk_port if port is None else port,
        proxy_headers=True,
        forwarded_allow_ips=settings.desk_trusted_proxies,
        log_level=settings.log_level.lower(),
        access_log=False,  # URLs can carry search digits; our own log lines say what matters
    )
    server = uvicorn.Server(config)
    thread: threading.Thread | None = None
    if runner:
        thread = threading.Thread(
            target=scheduler.serve,
            kwargs={"install_signal_handlers": False},
            name="runner",
        )
        thread.start()
    logger.info(
        "desk on http://%s:%s (ledger %s, runner %s)",
        config.host,
        config.port,
        scheduler.ledger.safe_url,
        "on" if runner else "off",
    )

    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal to the
    # handler that was there before it: ours, which drains the runner instead of dying.
    def drain(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        scheduler.request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, drain)
    try:
        server.run()
    finally:
        if thread is not None:
            logger.info("desk stopped; letting runs in flight finish")
            scheduler.request_stop()
            thread.join()
        scheduler.ledger.dispose()
