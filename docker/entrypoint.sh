#!/bin/sh
# Container entrypoint for the api and worker services.
#
# It waits for nothing: Compose starts these services only once PostgreSQL and Qdrant report
# healthy (depends_on: condition: service_healthy). With RUN_MIGRATIONS=true it applies database
# migrations once per container start, before the command runs -- never once per gunicorn worker
# -- under a PostgreSQL advisory lock, so replicas started together take turns instead of racing.
# Then it replaces itself with the command, so the command receives SIGTERM from `docker stop`.
set -eu

case "${RUN_MIGRATIONS:-false}" in
    true | 1 | yes | on)
        python "$(dirname "$0")/migrate.py"
        ;;
    false | 0 | no | off | "") ;;
    *)
        echo "entrypoint: RUN_MIGRATIONS=${RUN_MIGRATIONS} is not a boolean; use true or false." >&2
        exit 2
        ;;
esac

exec "$@"
