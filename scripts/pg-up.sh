#!/usr/bin/env bash
# Make sure a PostgreSQL server accepts connections on 127.0.0.1:5432 with a role `zhisuan`
# (password `zhisuan`) owning a database `zhisuan_test`, then print the SQLAlchemy URL to use:
#
#   export ZHISUAN_TEST_POSTGRES_URL="$(scripts/pg-up.sh)"
#
# Idempotent. Installs Debian's `postgresql` package when missing (needs root or sudo), starts
# the cluster with pg_ctlcluster (no systemd needed). Quiet on success: only the URL on stdout;
# diagnostics go to stderr.
set -euo pipefail

HOST=127.0.0.1
PORT="${ZHISUAN_PG_PORT:-5432}"
ROLE=zhisuan
PASSWORD=zhisuan
DB=zhisuan_test
URL="postgresql+psycopg://${ROLE}:${PASSWORD}@${HOST}:${PORT}/${DB}"

log() { echo "pg-up: $*" >&2; }
die() { log "error: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo -n"
fi

accepting() {
    # A plain TCP connect: works without any client package installed.
    (exec 3<>"/dev/tcp/${HOST}/${PORT}") 2>/dev/null
}

can_login() {
    command -v psql >/dev/null 2>&1 || return 1
    PGPASSWORD="$PASSWORD" PGCONNECT_TIMEOUT=3 psql -h "$HOST" -p "$PORT" -U "$ROLE" -d "$DB" \
        -tAc 'select 1' >/dev/null 2>&1
}

as_postgres() {
    # From / so psql does not complain that the postgres user cannot enter our directory.
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && $SUDO -u postgres "$@")
    fi
}

# Fast path: already up and provisioned.
if accepting && can_login; then
    echo "$URL"
    exit 0
fi

if ! accepting; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
        log "installing postgresql from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql; } >/dev/null 2>&1 \
            || die "apt-get install postgresql failed (run as root, or start PostgreSQL on ${HOST}:${PORT} yourself)"
    fi
    # Pick the newest installed version; create its `main` cluster if the package did not.
    VER="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    [ -n "$VER" ] || die "no PostgreSQL version under /usr/lib/postgresql"
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$VER" '$1==v && $2=="main" {f=1} END {exit !f}'; then
        $SUDO pg_createcluster -p "$PORT" "$VER" main >/dev/null \
            || die "pg_createcluster $VER main failed"
    fi
    STATUS="$(pg_lsclusters -h | awk -v v="$VER" '$1==v && $2=="main" {print $4}')"
    if [ "$STATUS" != "online" ]; then
        $SUDO pg_ctlcluster "$VER" main start >/dev/null 2>&1 \
            || die "pg_ctlcluster $VER main start failed; see /var/log/postgresql/postgresql-$VER-main.log"
    fi
    for _ in $(seq 1 60); do
        accepting && break
        sleep 0.5
    done
    accepting || die "PostgreSQL $VER did not accept connections on ${HOST}:${PORT} within 30 s"
fi

# Provision the role and the database (idempotent) through the local superuser.
as_postgres psql -v ON_ERROR_STOP=1 -qtA -p "$PORT" -d postgres >/dev/null <<SQL \
    || die "could not create role ${ROLE} / database ${DB} (is the server on ${HOST}:${PORT} a local Debian cluster?)"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '${ROLE}') THEN
        CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}' CREATEDB;
    ELSE
        ALTER ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}' CREATEDB;
    END IF;
END
\$\$;
SELECT 'CREATE DATABASE ${DB} OWNER ${ROLE}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '${DB}')\gexec
SQL

can_login || die "role ${ROLE} cannot log in to ${DB} on ${HOST}:${PORT} (check pg_hba.conf)"
echo "$URL"
