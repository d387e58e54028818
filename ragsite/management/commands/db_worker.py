"""`db_worker` from django-tasks-db, with ragsite's worker (ragsite.worker): start-up hooks
(resume work left behind), tasks of dead workers re-queued at start, and on SIGINT/SIGTERM the
running task stops at a safe point and goes back to the queue; the command then exits 0."""

import os

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands.db_worker import Command as BaseCommand
from django_tasks_db.management.commands.db_worker import logger

from ragsite.worker import worker_create


class Command(BaseCommand):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        # The library's default id is drawn once at import; ours names the host and process too.
        parser.set_defaults(worker_id=None)

    def handle(self, *, verbosity, queue_name, exclude_queues, reload, worker_id, **options):
        self.configure_logging(verbosity)
        if reload and options["batch"]:
            logger.warning("Warning: --reload and --batch cannot be specified together. Disabling autoreload.")
            reload = False
        queue_names = queue_name.split(",")
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_names:
            from django.core.management.base import CommandError

            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker_options = {
            key: options[key] for key in ("interval", "batch", "backend_name", "startup_delay", "max_tasks")
        }
        if worker_id:
            worker_options["worker_id"] = worker_id
        worker = worker_create(queue_names=queue_names, excluded_queue_names=excluded, **worker_options)
        if reload:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                worker.configure_signals()  # only the reloader's child runs tasks
            run_with_reloader(worker.run)
        else:
            worker.configure_signals()
            worker.run()
