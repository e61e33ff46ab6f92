"""Builders of the four Job manifests of a run (plan, backup, migrate, restore): pure functions, plain dicts.

Every Job has a deterministic name and an owner reference to its run, runs at most one pod (`backoffLimit: 0`:
a migration must never run twice by itself) and reports its result on one marker line of its log.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shlex
from typing import Any

from django_migration_operator.plan import (
    PLAN_MARKER,
    TIMEOUT_GRACE_SECONDS,
    migrate_command,
    online_migrate_command,
    parse_marker,
    plan_command,
    rehearse_command,
    timed_command,
)
from django_migration_operator.resource import RUN_LABEL, STEP_LABEL, RunRef, Spec

__all__ = ["BACKUP_MARKER", "BACKUP_MOUNT", "PLAN_DEADLINE_SECONDS", "RESTORE_MARKER", "backup_job", "backup_path",
           "job_name", "migrate_job", "parse_marker", "plan_job", "restore_job"]

BACKUP_MARKER = "DJANGOOPS_BACKUP "
RESTORE_MARKER = "DJANGOOPS_RESTORE "
REHEARSAL_COPY_MARKER = "DJANGOOPS_REHEARSAL_COPY "
# Where the backup container writes its marker line again, as its termination message (observe.py reads it).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
BACKUP_MOUNT = "/backups"
# Planning only reads the migration graph and django_migrations: minutes mean something is stuck.
PLAN_DEADLINE_SECONDS = 600
# Online: the longest a migration waits for a lock (and so the longest the app's queries queue behind it), and
# how often an atomic migration that gave up is tried.
LOCK_TIMEOUT_SECONDS = 2
LOCK_ATTEMPTS = 5
# pg_dump's worker processes in the backup and the rehearsal's copy (see DUMP_FUNCTIONS).
DUMP_JOBS = 2

# An image of PostgreSQL's tools whose tag starts with its major version: postgres:16, postgres:16.4-bookworm,
# registry:5000/library/postgres:17-alpine, bitnami/postgresql:16.2.0. Other names cannot be told: accepted.
_POSTGRES_TAG = re.compile(r"^(?:.*/)?[^/:@]*postgres[^/:@]*:(?P<major>\d+)(?:[.\-_]|$)")
_MAX_NAME_LENGTH = 63  # a DNS label; the Job controller also copies the name into a label value
_NAME_HASH_LENGTH = 10
_BACKUP_VOLUME = "backups"
_REHEARSAL_VOLUME = "djangoops-rehearsal"

# What the Job's container takes from the app container: what Django needs to reach the database (env, files,
# user, working directory). Probes, ports, lifecycle hooks belong to a server, and `args` would be appended to
# our command.
_INHERITED_CONTAINER_FIELDS = ("env", "envFrom", "volumeMounts", "volumeDevices", "workingDir", "securityContext",
                               "resources", "imagePullPolicy")

# The server's maintenance database: the same URL with the path replaced by /postgres, query kept. The restore
# and the rehearsal's copy create databases from there.
_ADMIN_URL = r"""url_without_query=${DATABASE_URL%%\?*}
query=${DATABASE_URL#"$url_without_query"}
ADMIN_URL="${url_without_query%/*}/postgres$query"
"""
# The tools' major version, from `pg_dump --version` ("pg_dump (PostgreSQL) 16.4 (Debian ...)", "17devel").
_TOOLS_MAJOR = r"""major=$(pg_dump --version)
major=${major#*) }
major=${major%%[!0-9]*}
"""
# Shared by the backup and the rehearsal's copy, so that the rehearsal times the dump the backup will take, and by
# the benchmarks' dumps alone: `dump FOLDER` (DATABASE_URL in the environment), `archive_size FOLDER`.
DUMP_FUNCTIONS = r"""# The compression decides the dump's time (the app is stopped) and size: pg_dump's default gzip
# level takes several times the plain dump on big tables. From PostgreSQL 16 on, pg_dump has zstd: at level 1,
# in pg_dump 17 on the demo's posts, gzip 1's time for half its CPU and 63% of its size (lz4: no faster, 2.6x
# zstd's size). Older pg_dump only has gzip: level 1. See bench/README.md.
""" + _TOOLS_MAJOR + r"""if [ "${major:-0}" -ge 16 ]; then compress=zstd:1 compression=zstd:1
else compress=1 compression=gzip:1; fi
# The directory format (a folder: toc.dat and one file per table), in DUMP_JOBS worker processes: each compresses
# the tables it reads, so at gzip 1 the dump takes about as long as the plain one, where the custom format took
# 1.15x (bench/README.md). The workers take their locks with NOWAIT: DDL from another client between the leader's
# locks and a worker's fails the dump, before any migration. pg_dump opens DUMP_JOBS + 1 connections.
# --create also records the database's own owner, privileges, comment and settings: the restore re-applies them.
dump() {
  pg_dump --format=directory --jobs=""" + str(DUMP_JOBS) + r""" --create --compress="$compress" --file="$1" \
    --dbname="$DATABASE_URL"
}
# The archive's bytes: `du` counts blocks, and busybox's has no --bytes. wc prints a total only for two files or more.
archive_size() { wc -c "$1"/* | awk 'END { print $1 }'; }
"""

# The backup and restore scripts never `set -x`: their command lines carry DATABASE_URL and its password.
_BACKUP_SCRIPT = r"""set -eu
folder=${BACKUP_PATH%/*}
mkdir -p "$folder"
# Dump to a side folder: an interrupted dump never looks like a finished one, and a failed one is removed. One left
# by a pod killed outright goes first: pg_dump writes only into a folder that does not exist yet.
trap 'rm -rf "$BACKUP_PATH.partial"' EXIT
rm -rf "$BACKUP_PATH.partial"
""" + DUMP_FUNCTIONS + r"""dump "$BACKUP_PATH.partial"
# An archive that pg_restore cannot read is no backup: fail here, before any migration starts.
pg_restore --list "$BACKUP_PATH.partial" > /dev/null
# A dump this run took before (its pod ran again) is replaced: mv would move the new folder into the old one.
rm -rf "$BACKUP_PATH"
mv "$BACKUP_PATH.partial" "$BACKUP_PATH"
# Keep the newest $BACKUP_KEEP dumps of this app, the folders and the single files of releases before 2026-12
# (custom format), by the time they were last written (names are DNS names: no spaces, no newlines).
ls -1td "$folder"/*.dump | tail -n "+$((BACKUP_KEEP + 1))" | while IFS= read -r old; do rm -rf "$old"; done
size=$(archive_size "$BACKUP_PATH")
""" + f"""record='%s{{"path": "%s", "sizeBytes": %s, "format": "directory", "compression": "%s", "verified": true}}'
marker=$(printf "$record" {shlex.quote(BACKUP_MARKER)} "$BACKUP_PATH" "$size" "$compression")
""" + r"""printf '%s\n' "$marker"
# Also the container's termination message: the operator reads it from the pod's status, with no request for the
# log through the kubelet while the app is down. The log has it too, should the file not be writable.
{ printf '%s\n' "$marker" > "$TERMINATION_MESSAGE_PATH"; } 2>/dev/null || true
"""

# Drop and recreate rather than `pg_restore --clean`: a clean restore in place does not undo what a migration
# added (tables, constraints) and can leave a mixed schema. Everything that can refuse (an unreadable dump, a role
# that may not create databases) is checked before the DROP, so a refused restore leaves the database as it was.
# The new database keeps the old one's encoding and locale (text ordering, indexes); psql quotes the name
# (:"dbname" doubles double quotes). The DO block is quoted $check$, never $$: the kubelet turns $$ in a
# command into $. A restore that failed after the DROP can simply run again: it starts with the DROP.
#
# What pg_restore leaves out without --create, the database's own owner, comment, privileges and settings
# (ALTER DATABASE/ROLE ... IN DATABASE ... SET), comes from the archive's database entries (the backup ran with
# --create) and is applied after the data, so that a setting such as default_transaction_read_only never
# applies to the restore itself. CREATE DATABASE and \connect are cut out of that SQL: the database exists, and
# these statements run from the maintenance database. A statement the role may not run there is reported, not
# fatal: the data is back by then. Every object keeps its owner when the URL's role may act as each owner of the
# archive (pg_database_owner always can); otherwise all is restored with --no-owner, owned by the URL's role, and
# the marker names the roles it could not act as.
_RESTORE_ONCE = r"""set -eu
""" + _ADMIN_URL + r"""work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pg_restore --create --list "$BACKUP_PATH" > "$work/toc"
database_entries='(DATABASE|COMMENT - DATABASE|ACL - DATABASE|DATABASE PROPERTIES|SECURITY LABEL - DATABASE)'
grep -E "^[0-9]+; [0-9]+ [0-9]+ $database_entries " "$work/toc" > "$work/database.list" || true
# The last word of an entry is its owner; entries without one (extensions) end with a space.
owners=$(sed -n 's/^[0-9][0-9]*; .* \([^ ][^ ]*\)$/\1/p' "$work/toc" | sort -u | tr '\n' ' ')
foreign=$(psql "$ADMIN_URL" --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 -v owners="$owners" <<'SQL'
SELECT coalesce(string_agg(owner, ', ' ORDER BY owner), '')
  FROM unnest(string_to_array(btrim(:'owners'), ' ')) AS owner
 WHERE owner <> 'pg_database_owner'
   AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
   AND NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = owner AND pg_has_role(current_user, r.oid,
         CASE WHEN current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END));
SQL
)
ownership=""
[ -z "$foreign" ] || ownership="--no-owner"
psql "$ADMIN_URL" --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v dbname="$DATABASE_NAME" <<'SQL'
DO $check$ BEGIN
  IF NOT (SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'role % may not create databases (it needs CREATEDB): nothing was dropped', current_user;
  END IF;
END $check$;
SELECT pg_encoding_to_char(coalesce(existing.encoding, defaults.encoding)) AS db_encoding,
       coalesce(existing.datcollate, defaults.datcollate) AS db_collate,
       coalesce(existing.datctype, defaults.datctype) AS db_ctype
  FROM pg_database defaults LEFT JOIN pg_database existing ON existing.datname = :'dbname'
 WHERE defaults.datname = 'template1' \gset
DROP DATABASE IF EXISTS :"dbname" WITH (FORCE);
CREATE DATABASE :"dbname" TEMPLATE template0 ENCODING :'db_encoding' LC_COLLATE :'db_collate' LC_CTYPE :'db_ctype';
SQL
pg_restore --single-transaction --exit-on-error $ownership --dbname="$DATABASE_URL" "$BACKUP_PATH"
refused=0
if [ -s "$work/database.list" ]; then
  pg_restore --create $ownership --use-list="$work/database.list" --file="$work/database.sql" "$BACKUP_PATH"
  sed -e '/^CREATE DATABASE /d' -e '/^\\connect /d' "$work/database.sql" > "$work/apply.sql"
  psql "$ADMIN_URL" --no-psqlrc --quiet --file="$work/apply.sql" 2> "$work/refused" || true
  cat "$work/refused" >&2
  refused=$(grep -c 'ERROR:' "$work/refused" || true)
fi
# Entries read "<id>; <catalog> <oid> <kind> <schema or -> <name> <owner>".
has() { grep -q "^[0-9]*; [0-9]* [0-9]* $1 " "$work/database.list"; }
kept=""
if [ -z "$ownership" ]; then kept="\"objectOwners\""; fi
if [ -z "$ownership" ] && has 'DATABASE -'; then kept="$kept, \"owner\""; fi
if has 'COMMENT - DATABASE'; then kept="$kept, \"comment\""; fi
if has 'ACL - DATABASE'; then kept="$kept, \"privileges\""; fi
if has 'DATABASE PROPERTIES'; then kept="$kept, \"settings\""; fi
kept=${kept#, }
""" + f"""printf '%s{{"path": "%s", "restored": true, "kept": [%s], "notActingAs": "%s", "refused": %s, '\\
'"attempts": %s}}\\n' {shlex.quote(RESTORE_MARKER)} "$BACKUP_PATH" "$kept" "$foreign" "$refused" "$RESTORE_ATTEMPT"
"""

# The server going away (a restart, a failover) breaks a restore off; with the app stopped and the database dropped
# that must not end the run. So the restore runs again, from its DROP, once the server answers, up to
# RESTORE_ATTEMPTS times within RESTORE_SERVER_WAIT_SECONDS. A restore that failed with the server answering (an
# unreadable dump, a refused statement) fails at once. `sh -c` runs each attempt in a shell of its own: `set -e`
# would not hold in a function called as a condition.
RESTORE_ATTEMPTS = 5
RESTORE_SERVER_WAIT_SECONDS = 600
_SERVER_GONE = ("Connection refused|server closed the connection|terminating connection due to administrator command"
                "|the database system is (shutting down|starting up|not yet accepting connections|in recovery mode)"
                "|no connection to the server|connection to server was lost|could not receive data from server"
                "|SSL SYSCALL error|timeout expired")
_RESTORE_SCRIPT = r"""set -u
once=$(cat <<'RESTORE_ONCE'
""" + _RESTORE_ONCE + f"""RESTORE_ONCE
)
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
started=$(date +%s)
attempt=1
until RESTORE_ATTEMPT=$attempt sh -c "$once" 2> "$errors"; do
  cat "$errors" >&2
  if ! grep -qE {shlex.quote(_SERVER_GONE)} "$errors" && pg_isready --quiet --dbname="$DATABASE_URL"; then
    exit 1
  fi
  if [ "$attempt" -ge {RESTORE_ATTEMPTS} ]; then
    echo "restore: the server broke off {RESTORE_ATTEMPTS} attempts; giving up" >&2
    exit 1
  fi
  echo "restore: attempt $attempt broke off: the server went away; waiting for it to answer" >&2
  until pg_isready --quiet --dbname="$DATABASE_URL"; do
    if [ $(($(date +%s) - started)) -ge {RESTORE_SERVER_WAIT_SECONDS} ]; then
      echo "restore: the server did not answer within {RESTORE_SERVER_WAIT_SECONDS} s; giving up" >&2
      exit 1
    fi
    sleep 1
  done
  attempt=$((attempt + 1))
  echo "restore: the server answers again; attempt $attempt starts from the DROP" >&2
done
cat "$errors" >&2
"""


# The rehearsal's copy, in the tools image before the app's migrate container: a scratch database created like the
# source (encoding, locale), filled by pg_dump | pg_restore while the app serves. CREATE DATABASE ... TEMPLATE would
# be faster but refuses a source with open connections: it would need the app stopped, the one thing a rehearsal
# must not do. The dump is taken as the backup takes it (same format), and timed: it predicts the backup's share
# of the downtime. The row counts of the fresh copy are what the rehearsal's verification compares with.
_REHEARSAL_COPY_SCRIPT = r"""set -eu
""" + _ADMIN_URL + r"""SCRATCH_URL="${url_without_query%/*}/$SCRATCH_NAME$query"
psql "$ADMIN_URL" --no-psqlrc --quiet -v ON_ERROR_STOP=1 -v scratch="$SCRATCH_NAME" -v source="$SOURCE_NAME" <<'SQL'
SELECT pg_encoding_to_char(encoding) AS db_encoding, datcollate AS db_collate, datctype AS db_ctype
  FROM pg_database WHERE datname = :'source' \gset
DROP DATABASE IF EXISTS :"scratch" WITH (FORCE);
CREATE DATABASE :"scratch" TEMPLATE template0 ENCODING :'db_encoding' LC_COLLATE :'db_collate' LC_CTYPE :'db_ctype';
SQL
dump=$REHEARSAL_DUMP
""" + DUMP_FUNCTIONS + r"""started=$(date +%s.%N)
dump "$dump"
dumped=$(date +%s.%N)
pg_restore --single-transaction --exit-on-error --no-owner --dbname="$SCRATCH_URL" "$dump"
restored=$(date +%s.%N)
size=$(archive_size "$dump")
rm -rf "$dump"
counts=""
for table in $ROW_COUNT_TABLES; do
  count=$(psql "$SCRATCH_URL" --no-psqlrc --tuples-only --no-align -v ON_ERROR_STOP=1 -v table="$table" <<'SQL'
SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %s', to_regclass(:'table')),
        false, true, '')))[1]::text;
SQL
)
  counts="$counts, \"$table\": $count"
done
seconds() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }
""" + f"""printf '%s{{"dumpSeconds": %s, "restoreSeconds": %s, "sizeBytes": %s, "rowCounts": {{%s}}}}\\n' \\
{shlex.quote(REHEARSAL_COPY_MARKER)} "$(seconds "$started" "$dumped")" "$(seconds "$dumped" "$restored")" "$size" \\
"${{counts#, }}"
"""


def scratch_name(run: RunRef) -> str:
    """The rehearsal's scratch database: named after the run, unique per namespace/name, a plain identifier."""
    digest = hashlib.sha256(run.key.encode()).hexdigest()[:8]
    prefix = "djangoops_rehearsal_"
    room = _MAX_NAME_LENGTH - len(prefix) - len(digest) - 1  # PostgreSQL's names have 63 bytes, as DNS labels
    readable = re.sub(r"[^a-z0-9]+", "_", run.name.lower())[:room].strip("_")
    return f"{prefix}{readable}_{digest}"


def rehearse_job(run: RunRef, spec: Spec, pod_template: dict[str, Any], source_name: str,
                 tools_image: str) -> dict[str, Any]:
    """The rehearsal: the copy (tools image, an initContainer), then the app's migrate against it, pointed at the
    scratch database and checked to be there (plan.rehearse_command). Prints both markers."""
    scratch = scratch_name(run)
    if scratch == source_name:
        raise ValueError(f"the scratch database {scratch} is the database itself; rename the run")
    url: dict[str, Any] = {"secretKeyRef": {"name": spec.url_secret, "key": spec.url_key}}
    parameters: list[dict[str, Any]] = [
        {"name": "DJANGOOPS_DATABASE", "value": spec.alias},
        {"name": "DJANGOOPS_APP", "value": spec.migrate_app or ""},
        {"name": "DJANGOOPS_TARGET", "value": spec.migrate_target or ""},
        {"name": "DJANGOOPS_SCRATCH", "value": scratch},
        {"name": "DJANGOOPS_URL_ENV", "value": spec.rehearsal_url_env},
        {"name": "DJANGOOPS_SOURCE_URL", "valueFrom": url},
    ]
    annotations, container, pod_spec = _app_pod(spec, pod_template, rehearse_command(spec.timeout_seconds),
                                                parameters)
    copy_container = {
        "name": "copy", "image": tools_image, "command": ["sh", "-c", _REHEARSAL_COPY_SCRIPT],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "env": [{"name": "DATABASE_URL", "valueFrom": url}, {"name": "PGCONNECT_TIMEOUT", "value": "10"},
                {"name": "SCRATCH_NAME", "value": scratch}, {"name": "SOURCE_NAME", "value": source_name},
                {"name": "ROW_COUNT_TABLES", "value": " ".join(spec.row_count_tables)},
                {"name": "REHEARSAL_DUMP", "value": "/rehearsal/copy.dump"}],
        "volumeMounts": [{"name": _REHEARSAL_VOLUME, "mountPath": "/rehearsal"}],
    }
    pod_spec["initContainers"] = [copy_container, *pod_spec.get("initContainers", [])]
    pod_spec["volumes"] = [*pod_spec.get("volumes", []), {"name": _REHEARSAL_VOLUME, "emptyDir": {}}]
    return _job(run, spec, "rehearse", container, pod_spec, annotations, _backstop(spec))


def job_name(run: RunRef, step: str) -> str:
    """`<run>-<step>`; too long or not a DNS label: `<run, cut>-<hash of the full name>-<step>`, still unique."""
    name = f"{run.name}-{step}"
    if len(name) <= _MAX_NAME_LENGTH and "." not in name:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:_NAME_HASH_LENGTH]
    room = _MAX_NAME_LENGTH - len(step) - _NAME_HASH_LENGTH - 2
    prefix = run.name.replace(".", "-")[:room].rstrip("-")
    return f"{prefix}-{digest}-{step}"


def backup_path(spec: Spec, run: RunRef) -> str:
    """One folder per app in the claim, so that `backup.keep` prunes each app's dumps on their own."""
    return f"{BACKUP_MOUNT}/{spec.deployment}/{run.name}.dump"


def _tools_mismatch(image: str, tools: str, server: str, *, newer: bool) -> str:
    """Why tools of another major version than the server's cannot serve it, and the fix: the one text of the check
    by the image's tag (tools_problem) and of the plan pod's by its pg_dump --version, whose shell passes `$VAR`s."""
    fix = f"set backup.image to postgres:{server}, or remove it and the operator chooses postgres:{server}"
    if not newer:
        return (f"backup.image: {image} carries pg_dump {tools}, older than the server (PostgreSQL {server}), and "
                f"pg_dump refuses a newer server (server version mismatch); {fix}")
    return (f"backup.image: {image} carries pg_restore {tools}, newer than the server (PostgreSQL {server}), whose "
            f"archives PostgreSQL does not promise to restore into an older server (pg_restore 17 sets "
            f"transaction_timeout, which 16 and older refuse): a failed migration could not be rolled back; {fix}")


# The plan's first container tries the tools image while nothing is stopped yet: an image the cluster cannot pull
# fails Planning (within jobTemplate.startTimeoutSeconds), and tools of another major version than the server fail
# it with the plan's own error line, also for an image whose tag does not tell its version.
_TOOLS_CHECK_SCRIPT = r"""set -eu
""" + _TOOLS_MAJOR + f"""if [ "${{major:-0}}" -lt "$SERVER_MAJOR" ]; then
  why="{_tools_mismatch("$TOOLS_IMAGE", "${major:-?}", "$SERVER_MAJOR", newer=False)}"
  reason=ToolsTooOld
elif [ "$major" -gt "$SERVER_MAJOR" ]; then
  why="{_tools_mismatch("$TOOLS_IMAGE", "$major", "$SERVER_MAJOR", newer=True)}"
  reason=ToolsTooNew
else
  exit 0
fi
printf '%s{{"error": "%s", "reason": "%s"}}\\n' "$PLAN_MARKER" "$why" "$reason"
exit 1
"""


def plan_job(run: RunRef, spec: Spec, pod_template: dict[str, Any],
             tools: tuple[str, int] | None = None) -> dict[str, Any]:
    """The Job that prints the plan (see plan.py), from the app Deployment's pod template; with `tools` (the tools
    image and the server's major version), first the check that the image runs and its pg_dump fits the server."""
    # Always set, even empty: a variable of the same name in the Deployment must not leak into the plan.
    parameters = [{"name": "DJANGOOPS_DATABASE", "value": spec.alias},
                  {"name": "DJANGOOPS_APP", "value": spec.migrate_app or ""},
                  {"name": "DJANGOOPS_TARGET", "value": spec.migrate_target or ""}]
    annotations, container, pod_spec = _app_pod(spec, pod_template, plan_command(), parameters)
    if tools:
        image, server_major = tools
        check = {"name": "tools", "image": image, "command": ["sh", "-c", _TOOLS_CHECK_SCRIPT],
                 "terminationMessagePolicy": "FallbackToLogsOnError",
                 "env": [{"name": "SERVER_MAJOR", "value": str(server_major)}, {"name": "TOOLS_IMAGE", "value": image},
                         {"name": "PLAN_MARKER", "value": PLAN_MARKER}]}
        pod_spec["initContainers"] = [check, *pod_spec.get("initContainers", [])]
    return _job(run, spec, "plan", container, pod_spec, annotations, PLAN_DEADLINE_SECONDS)


def migrate_job(run: RunRef, spec: Spec, pod_template: dict[str, Any]) -> dict[str, Any]:
    """The Job that runs `manage.py migrate`; the Job controller kills it after migrate.timeoutSeconds."""
    command = timed_command(migrate_command(spec.alias, spec.migrate_app, spec.migrate_target), spec.timeout_seconds)
    annotations, container, pod_spec = _app_pod(spec, pod_template, command, [])
    return _job(run, spec, "migrate", container, pod_spec, annotations, _backstop(spec))


def online_migrate_job(run: RunRef, spec: Spec, pod_template: dict[str, Any], step: str,
                       migrations: list[str]) -> dict[str, Any]:
    """An online run's expand ("migrate") or contract ("contract") Job: the named migrations, in plan order, each
    under LOCK_TIMEOUT and tried up to LOCK_ATTEMPTS times when it gave up waiting for a lock."""
    parameters = [{"name": "DJANGOOPS_DATABASE", "value": spec.alias},
                  {"name": "DJANGOOPS_MIGRATIONS", "value": " ".join(migrations)},
                  {"name": "DJANGOOPS_LOCK_ATTEMPTS", "value": str(LOCK_ATTEMPTS)},
                  # libpq reads PGOPTIONS for every connection Django opens; later entries win over the app's own.
                  {"name": "PGOPTIONS", "value": f"-c lock_timeout={LOCK_TIMEOUT_SECONDS * 1000}"}]
    command = timed_command(online_migrate_command(), spec.timeout_seconds)
    annotations, container, pod_spec = _app_pod(spec, pod_template, command, parameters)
    return _job(run, spec, step, container, pod_spec, annotations, _backstop(spec))


def _backstop(spec: Spec) -> int:
    """The Job controller's deadline: only for a pod whose own timeout (timed_command) did not end it."""
    return spec.timeout_seconds + TIMEOUT_GRACE_SECONDS + 30


def tools_image(spec: Spec, server_major: int) -> str:
    """backup.image, or the official image of the server's major version: its pg_dump matches the server."""
    return spec.backup_image or f"postgres:{server_major}"


def tools_problem(image: str, server_major: int) -> str | None:
    """Why `image` cannot back this server up and restore it: its tag names another PostgreSQL major version;
    None when it is the server's or cannot be told."""
    tag = _POSTGRES_TAG.match(image)
    if not tag or int(tag["major"]) == server_major:
        return None
    return _tools_mismatch(image, tag["major"], str(server_major), newer=int(tag["major"]) > server_major)


def backup_job(run: RunRef, spec: Spec, backup_path: str, image: str) -> dict[str, Any]:
    """pg_dump into the claim, verified, pruned to backup.keep; prints BACKUP_MARKER {path, sizeBytes, ...}."""
    # The dump just taken is always kept, whatever keep says: it is the one this run may need.
    keep = {"name": "BACKUP_KEEP", "value": str(max(spec.backup_keep, 1))}
    message = {"name": "TERMINATION_MESSAGE_PATH", "value": TERMINATION_MESSAGE_PATH}
    container, pod_spec = _tools_pod(spec, "backup", _BACKUP_SCRIPT, backup_path, [keep, message], image)
    container["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    return _job(run, spec, "backup", container, pod_spec, {}, spec.backup_timeout_seconds)


def restore_job(run: RunRef, spec: Spec, backup_path: str, database_name: str, image: str) -> dict[str, Any]:
    """Drops and recreates `database_name`, restores the dump in one transaction; prints RESTORE_MARKER {...}.

    No deadline: a restore killed half-way leaves an empty database, worse than one that takes long.
    """
    name = {"name": "DATABASE_NAME", "value": database_name}
    container, pod_spec = _tools_pod(spec, "restore", _RESTORE_SCRIPT, backup_path, [name], image)
    return _job(run, spec, "restore", container, pod_spec, {}, None)


def _app_pod(spec: Spec, pod_template: dict[str, Any], command: list[str],
             extra_env: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """The app's pod (annotations, the chosen container, the pod spec without containers) turned into a one-shot.

    The pod spec is kept whole (service account, pull secrets, volumes, security context, scheduling) and so are
    the annotations (agents that inject files or config, such as Vault's, may be needed to reach the database).
    The labels are not: the Deployment's selector and Services must not match a Job pod.
    initContainers are kept: they prepare files in shared volumes, and native sidecars (restartPolicy: Always,
    e.g. a Cloud SQL proxy) live there and stop with the Job. Other containers are dropped: a sidecar that never
    exits would keep the Job running. An initContainer that runs `migrate` itself must be removed from the app.
    """
    template_spec = pod_template.get("spec", {})
    containers = template_spec.get("containers", [])
    names = [c["name"] for c in containers]
    wanted = spec.container or names[0]
    if wanted not in names:
        raise ValueError(f"app.container: no container '{wanted}' in Deployment '{spec.deployment}' "
                         f"(containers: {', '.join(names)}); set app.container to one of them")
    app_container = containers[names.index(wanted)]
    container = {key: copy.deepcopy(app_container[key]) for key in _INHERITED_CONTAINER_FIELDS if key in app_container}
    container.update(name=wanted, image=spec.image or app_container["image"], command=command)
    if extra_env:
        container["env"] = [*container.get("env", []), *extra_env]
    pod_spec = {key: copy.deepcopy(value) for key, value in template_spec.items() if key != "containers"}
    annotations = dict(pod_template.get("metadata", {}).get("annotations") or {})
    return annotations, container, pod_spec


def _tools_pod(spec: Spec, step: str, script: str, path: str, extra_env: list[dict[str, Any]],
               image: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pod of the PostgreSQL tools image with the backup claim at BACKUP_MOUNT and the database URL secret."""
    if not spec.backup_claim:
        raise ValueError("backup.volumeClaim: a backup or a restore needs a PersistentVolumeClaim; set "
                         "backup.volumeClaim, or backup.enabled: false to migrate without a backup")
    env = [
        # A reference, never the value: the URL holds the password.
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": spec.url_secret, "key": spec.url_key}}},
        {"name": "BACKUP_PATH", "value": path},
        # Fail fast when the server does not answer, instead of hanging while the app is stopped.
        {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        *extra_env,
    ]
    container = {"name": step, "image": image, "command": ["sh", "-c", script], "env": env,
                 "volumeMounts": [{"name": _BACKUP_VOLUME, "mountPath": BACKUP_MOUNT}]}
    pod_spec = {
        "automountServiceAccountToken": False,  # the tools never call the Kubernetes API
        "volumes": [{"name": _BACKUP_VOLUME, "persistentVolumeClaim": {"claimName": spec.backup_claim}}],
    }
    return container, pod_spec


def _job(run: RunRef, spec: Spec, step: str, container: dict[str, Any], pod_spec: dict[str, Any],
         pod_annotations: dict[str, str], active_deadline_seconds: int | None) -> dict[str, Any]:
    """What every Job of a run shares: name, labels, owner, a single attempt, and spec.jobTemplate applied."""
    labels = {RUN_LABEL: run.name, STEP_LABEL: step}
    template = spec.job_template
    # The operator reads a failed pod's termination message: the log tail when the command wrote none.
    container = {**container, "terminationMessagePolicy": "FallbackToLogsOnError"}
    # spec.jobTemplate wins over what the Deployment says: it is where the user wants the Jobs to run. Its
    # securityContext is the container's (the CRD says so); the pod-level one stays the app's.
    for key in ("resources", "securityContext"):
        if key in template:
            container[key] = copy.deepcopy(template[key])
    pod_spec = {**pod_spec, "containers": [container], "restartPolicy": "Never"}
    for key in ("nodeSelector", "tolerations"):
        if key in template:
            pod_spec[key] = copy.deepcopy(template[key])
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if pod_annotations:
        pod_metadata["annotations"] = pod_annotations
    job_spec: dict[str, Any] = {"backoffLimit": 0, "template": {"metadata": pod_metadata, "spec": pod_spec}}
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(run, step), "namespace": run.namespace, "labels": labels,
                     "ownerReferences": [run.owner_reference()]},
        "spec": job_spec,
    }
