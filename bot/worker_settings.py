"""The worker for arq's own command line: ``arq bot.worker_settings.WorkerSettings``.

A separate module because arq reads class attributes, so the settings are read when this module is imported;
importing :mod:`bot.worker` (the CLI does) must not require valid settings.

arq's command line builds arq's plain ``Worker``: no job leases (a dead worker's job waits for the job timeout
+ 10 s) and no riding out a Redis outage (the process exits). ``deskmate worker`` runs
:class:`bot.resilient_worker.ResilientWorker`, with both.
"""

from __future__ import annotations

from bot.core.settings import get_settings
from bot.redis_conn import redis_settings
from bot.worker import shutdown, startup, worker_options


class WorkerSettings:
    """For the ``arq`` command line: ``arq bot.worker_settings.WorkerSettings``."""

    _settings = get_settings()
    functions = worker_options(_settings)["functions"]
    cron_jobs = worker_options(_settings)["cron_jobs"]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings)
    max_jobs = _settings.worker_max_jobs
    job_timeout = _settings.job_timeout_s
    max_tries = _settings.job_max_tries
    poll_delay = _settings.worker_poll_delay_s
