"""The Job manifests, and the backup and restore scripts run for real against a throwaway PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from bench.baseline import archive_bytes
from devcluster.kubelet.expansion import expand
from django_migration_operator import jobs
from django_migration_operator.plan import PLAN_SCRIPT, TIMEOUT_GRACE_SECONDS, parse_plan_output
from django_migration_operator.resource import RUN_LABEL, STEP_LABEL, RunRef, Spec
from tests.pgserver import create_database, stopped, throwaway_postgres

RUN = RunRef(namespace="shop", name="blog-release-42", uid="0f5c-uid")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def make_spec(**overrides: Any) -> Spec:
    body: dict[str, Any] = {
        "app": {"deployment": "web"},
        "database": {"urlSecret": {"name": "shop-db", "key": "DATABASE_URL"}, "alias": "default"},
        "migrate": {"app": "blog", "target": "0003", "timeoutSeconds": 1800},
        "backup": {"volumeClaim": "shop-migration-backups", "keep": 3, "image": "postgres:17"},
    }
    for section, values in overrides.items():
        body[section] = {**body.get(section, {}), **values} if isinstance(values, dict) else values
    return Spec.from_body(body)


def app_template() -> dict[str, Any]:
    """A Deployment's spec.template as the API returns it."""
    return {
        "metadata": {"labels": {"app": "web", "tier": "frontend"}, "annotations": {"vault.hashicorp.com/role": "web"},
                     "creationTimestamp": None},
        "spec": {
            "serviceAccountName": "web",
            "imagePullSecrets": [{"name": "registry"}],
            "securityContext": {"runAsNonRoot": True, "fsGroup": 1000},
            "nodeSelector": {"pool": "web"},
            "restartPolicy": "Always",
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
            "initContainers": [{"name": "wait-for-db", "image": "busybox", "command": ["true"]}],
            "containers": [
                {
                    "name": "django",
                    "image": "registry/shop:1.42",
                    "args": ["gunicorn", "shop.wsgi"],
                    "env": [{"name": "DJANGO_SETTINGS_MODULE", "value": "shop.settings"},
                            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "shop-db",
                                                                                     "key": "DATABASE_URL"}}}],
                    "envFrom": [{"configMapRef": {"name": "web-env"}}],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/shop"}],
                    "workingDir": "/app",
                    "resources": {"requests": {"cpu": "100m"}},
                    "ports": [{"containerPort": 8000}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
                    "startupProbe": {"httpGet": {"path": "/healthz", "port": 8000}},
                    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                },
                {"name": "nginx", "image": "nginx:1.27"},
            ],
        },
    }


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_of(job)["env"]}


SERVER_MAJOR = 17
LOCAL_TOOLS = "postgres:15"  # run_tools_job runs the script with this machine's tools; the name is not used


BUILDERS: dict[str, Callable[[Spec], dict[str, Any]]] = {
    "plan": lambda spec: jobs.plan_job(RUN, spec, app_template()),
    "migrate": lambda spec: jobs.migrate_job(RUN, spec, app_template()),
    "backup": lambda spec: jobs.backup_job(RUN, spec, "/backups/web/blog-release-42.dump",
                                           jobs.tools_image(spec, SERVER_MAJOR)),
    "restore": lambda spec: jobs.restore_job(RUN, spec, "/backups/web/blog-release-42.dump", "shop",
                                             jobs.tools_image(spec, SERVER_MAJOR)),
}


# --- names --------------------------------------------------------------------------------------------------

def test_job_name_is_run_and_step() -> None:
    assert jobs.job_name(RUN, "migrate") == "blog-release-42-migrate"


def test_a_long_name_is_cut_to_a_unique_dns_label() -> None:
    long_a = RunRef("shop", "release-" + "a" * 60, "uid")
    long_b = RunRef("shop", "release-" + "a" * 59 + "b", "uid")
    names = [jobs.job_name(run, "migrate") for run in (long_a, long_b)]
    assert all(len(name) <= 63 and DNS_LABEL.match(name) and name.endswith("-migrate") for name in names)
    assert names[0] != names[1]
    assert jobs.job_name(long_a, "migrate") == names[0]  # deterministic: found again after a restart
    assert jobs.job_name(long_a, "plan") != jobs.job_name(long_a, "migrate")


def test_a_dotted_name_becomes_a_dns_label() -> None:
    dotted, dashed = RunRef("shop", "release.1", "uid"), RunRef("shop", "release-1", "uid")
    assert DNS_LABEL.match(jobs.job_name(dotted, "plan"))
    assert jobs.job_name(dotted, "plan") != jobs.job_name(dashed, "plan")


def test_backup_path_is_a_folder_per_app() -> None:
    assert jobs.backup_path(make_spec(), RUN) == "/backups/web/blog-release-42.dump"


# --- what every Job shares -----------------------------------------------------------------------------------

@pytest.mark.parametrize("step", BUILDERS)
def test_every_job_runs_once_and_belongs_to_its_run(step: str) -> None:
    job = BUILDERS[step](make_spec())
    ours = {RUN_LABEL: "blog-release-42", STEP_LABEL: step}
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"] == {"name": f"blog-release-42-{step}", "namespace": "shop", "labels": ours,
                               "ownerReferences": [RUN.owner_reference()]}
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"] == ours  # nothing of the app's: its Services must not select the Job pod
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container_of(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize("step", BUILDERS)
def test_the_job_template_wins(step: str) -> None:
    template = {"resources": {"limits": {"memory": "1Gi"}}, "nodeSelector": {"pool": "batch"},
                "tolerations": [{"key": "batch", "operator": "Exists"}],
                "securityContext": {"runAsUser": 999}}
    job = BUILDERS[step](make_spec(jobTemplate=template))
    pod_spec = job["spec"]["template"]["spec"]
    assert container_of(job)["resources"] == {"limits": {"memory": "1Gi"}}
    assert container_of(job)["securityContext"] == {"runAsUser": 999}  # the container's, as the CRD says
    assert (pod_spec["nodeSelector"], pod_spec["tolerations"]) == (template["nodeSelector"], template["tolerations"])


# The migrate Job's own deadline is a backstop behind the timeout its pod enforces (plan.timed_command).
BACKSTOP = 1800 + TIMEOUT_GRACE_SECONDS + 30


@pytest.mark.parametrize(("step", "deadline"), [("plan", jobs.PLAN_DEADLINE_SECONDS), ("migrate", BACKSTOP),
                                                ("backup", 7200), ("restore", None)])
def test_deadlines(step: str, deadline: int | None) -> None:
    """migrate.timeoutSeconds (1800 here) bounds the migration only; the backup has backup.timeoutSeconds."""
    assert BUILDERS[step](make_spec())["spec"].get("activeDeadlineSeconds") == deadline


def test_the_backup_deadline_is_its_own() -> None:
    spec = make_spec(backup={"timeoutSeconds": 600}, migrate={"timeoutSeconds": 1})
    assert BUILDERS["backup"](spec)["spec"]["activeDeadlineSeconds"] == 600
    assert container_of(BUILDERS["migrate"](spec))["command"][3] == "1"


# --- plan and migrate: the app's pod ------------------------------------------------------------------------

def test_plan_job_is_the_app_container_as_a_one_shot() -> None:
    template = app_template()
    job = jobs.plan_job(RUN, make_spec(), template)
    assert template == app_template()  # the Deployment's template is not touched
    container = container_of(job)
    assert container["name"] == "django"
    assert container["image"] == "registry/shop:1.42"
    assert container["command"] == ["python", "manage.py", "shell", "-c", PLAN_SCRIPT]
    for dropped in ("args", "ports", "readinessProbe", "livenessProbe", "startupProbe", "lifecycle"):
        assert dropped not in container
    app = app_template()["spec"]["containers"][0]
    for kept in ("envFrom", "volumeMounts", "workingDir", "resources"):
        assert container[kept] == app[kept]
    assert container["env"] == [*app["env"], {"name": "DJANGOOPS_DATABASE", "value": "default"},
                                {"name": "DJANGOOPS_APP", "value": "blog"},
                                {"name": "DJANGOOPS_TARGET", "value": "0003"}]
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"] == {"vault.hashicorp.com/role": "web"}
    for kept in ("serviceAccountName", "imagePullSecrets", "securityContext", "nodeSelector", "volumes",
                 "initContainers"):
        assert pod["spec"][kept] == template["spec"][kept]


def test_plan_parameters_are_set_even_when_empty() -> None:
    env = env_of(jobs.plan_job(RUN, make_spec(migrate={"app": None, "target": None}), app_template()))
    assert (env["DJANGOOPS_APP"], env["DJANGOOPS_TARGET"]) == ("", "")


def test_migrate_job_runs_migrate_with_the_release_image() -> None:
    spec = make_spec(app={"deployment": "web", "image": "registry/shop:1.43"}, database={"alias": "orders"})
    container = container_of(jobs.migrate_job(RUN, spec, app_template()))
    assert container["image"] == "registry/shop:1.43"
    assert container["command"][:2] == ["python", "-c"], "migrate.timeoutSeconds is enforced in the pod"
    assert container["command"][3:] == ["1800", "python", "manage.py", "migrate", "blog", "0003", "--database",
                                        "orders", "--noinput"]
    assert container["env"] == app_template()["spec"]["containers"][0]["env"]


def test_the_chosen_container() -> None:
    spec = make_spec(app={"deployment": "web", "container": "nginx"})
    assert container_of(jobs.migrate_job(RUN, spec, app_template()))["image"] == "nginx:1.27"


def test_an_unknown_container_names_the_field() -> None:
    spec = make_spec(app={"deployment": "web", "container": "app"})
    with pytest.raises(ValueError) as error:
        jobs.plan_job(RUN, spec, app_template())
    assert str(error.value) == ("app.container: no container 'app' in Deployment 'web' (containers: django, nginx); "
                                "set app.container to one of them")


# --- backup and restore: the tools pod -----------------------------------------------------------------------

@pytest.mark.parametrize("step", ["backup", "restore"])
def test_tools_read_the_url_from_the_secret(step: str) -> None:
    job = BUILDERS[step](make_spec())
    container = container_of(job)
    assert container["image"] == "postgres:17"
    assert container["command"][:2] == ["sh", "-c"]
    assert env_of(job)["DATABASE_URL"] == {"secretKeyRef": {"name": "shop-db", "key": "DATABASE_URL"}}
    assert env_of(job)["BACKUP_PATH"] == "/backups/web/blog-release-42.dump"
    assert env_of(job)["PGCONNECT_TIMEOUT"] == "10"  # an unreachable server fails the step, it does not hang
    assert container["volumeMounts"] == [{"name": "backups", "mountPath": "/backups"}]
    assert job["spec"]["template"]["spec"]["volumes"] == [
        {"name": "backups", "persistentVolumeClaim": {"claimName": "shop-migration-backups"}}]


def test_backup_keeps_at_least_the_new_dump() -> None:
    assert env_of(BUILDERS["backup"](make_spec()))["BACKUP_KEEP"] == "3"
    assert env_of(BUILDERS["backup"](make_spec(backup={"keep": 0})))["BACKUP_KEEP"] == "1"


def test_restore_names_the_database() -> None:
    assert env_of(BUILDERS["restore"](make_spec()))["DATABASE_NAME"] == "shop"


@pytest.mark.parametrize("step", ["backup", "restore"])
def test_tools_need_a_claim(step: str) -> None:
    with pytest.raises(ValueError, match=r"^backup\.volumeClaim: "):
        BUILDERS[step](make_spec(backup={"volumeClaim": None}))


# --- the scripts, for real ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[str, str]]:
    with throwaway_postgres() as server:
        yield server


def run_tools_job(job: dict[str, Any], database_url: str, backups: Path,
                  bin_dir: str) -> subprocess.CompletedProcess[str]:
    """Runs the Job's container here as the kubelet would: its env, the secret resolved, the claim at `backups`."""
    container = container_of(job)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["BACKUP_PATH"] = env["BACKUP_PATH"].replace(jobs.BACKUP_MOUNT, str(backups), 1)
    if "TERMINATION_MESSAGE_PATH" in env:  # the file the kubelet mounts there: here, beside the claim
        env["TERMINATION_MESSAGE_PATH"] = str(backups / "termination-log")
    env |= {"DATABASE_URL": database_url, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    # The kubelet expands $(VAR) and turns $$ into $ in the command: run what a real pod would run.
    command = [expand(part, env) for part in container["command"]]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=120)


def snapshot(url: str) -> dict[str, Any]:
    """Tables, their columns and every row: what a restore must bring back exactly."""
    with psycopg.connect(url) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")]
        columns = connection.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                                     "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()
        rows = {table: connection.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall() for table in tables}
    return {"tables": tables, "columns": columns, "rows": rows}


def test_backup_prune_and_restore(postgres: tuple[str, str], tmp_path: Path) -> None:
    server_url, bin_dir = postgres
    # A name that needs quoting, a URL with a query, and a locale other than the server's default.
    name = 'shop "db"'
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
                           .format(sql.Identifier(name)))
    url = server_url.rsplit("/", 1)[0] + "/" + quote(name) + "?sslmode=disable"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE post (id int PRIMARY KEY, title text NOT NULL)")
        connection.execute("INSERT INTO post SELECT i, 'post ' || i FROM generate_series(1, 500) i")
    before = snapshot(url)
    spec = make_spec(backup={"keep": 2})

    # A dump of a release before the directory format (one file) and a side folder left by a pod killed outright.
    folder = tmp_path / "web"
    folder.mkdir()
    (folder / "release-0.dump").write_bytes(b"custom-format archive")
    (folder / "release-3.dump.partial").mkdir()
    (folder / "release-3.dump.partial" / "toc.dat").write_bytes(b"half a dump")
    markers = []
    for run_name in ("release-1", "release-2", "release-3"):
        run = RunRef("shop", run_name, "uid")
        job = jobs.backup_job(run, spec, jobs.backup_path(spec, run), LOCAL_TOOLS)
        done = run_tools_job(job, url, tmp_path, bin_dir)
        assert done.returncode == 0, done.stderr
        markers.append(jobs.parse_marker(done.stdout, jobs.BACKUP_MARKER))
        # The same line as the container's termination message, which the operator reads from the pod's status.
        assert (tmp_path / "termination-log").read_text() == done.stdout.splitlines()[-1] + "\n"
        assert job["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] == \
            jobs.TERMINATION_MESSAGE_PATH
    assert sorted(p.name for p in folder.iterdir()) == ["release-2.dump", "release-3.dump"]
    newest = folder / "release-3.dump"
    assert newest.is_dir(), "a directory archive"
    assert markers[-1] == {"path": str(newest), "sizeBytes": archive_bytes(newest), "format": "directory",
                           "compression": expected_compression(bin_dir), "verified": True}

    # What a migration does, with a connection left open, as by an app pod that did not stop.
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("ALTER TABLE post ADD COLUMN status text NOT NULL DEFAULT 'draft'")
        connection.execute("CREATE TABLE tag (id int PRIMARY KEY)")
        connection.execute("DELETE FROM post WHERE id > 250")
    assert snapshot(url) != before
    with psycopg.connect(url) as lingering:
        release_3 = RunRef("shop", "release-3", "uid")
        job = jobs.restore_job(release_3, spec, jobs.backup_path(spec, release_3), name, LOCAL_TOOLS)
        done = run_tools_job(job, url, tmp_path, bin_dir)
        assert done.returncode == 0, done.stderr
        with pytest.raises(psycopg.OperationalError):  # DROP DATABASE ... WITH (FORCE) ended it
            lingering.execute("SELECT 1")
    assert jobs.parse_marker(done.stdout, jobs.RESTORE_MARKER) == {
        "path": str(newest), "restored": True, "kept": ["objectOwners", "owner"], "notActingAs": "", "refused": 0,
        "attempts": 1}
    assert snapshot(url) == before
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()"
                                  ).fetchone() == ("C", "C")


def tools_major(bin_dir: str) -> int:
    version = subprocess.run([f"{bin_dir}/pg_dump", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.match(r"pg_dump \(PostgreSQL\) (\d+)", version)
    assert found, version
    return int(found[1])


def expected_compression(bin_dir: str) -> str:
    """What the backup script chooses for these tools: zstd level 1 from PostgreSQL 16 on, gzip level 1 before."""
    return "zstd:1" if tools_major(bin_dir) >= 16 else "gzip:1"


def test_the_backup_is_compressed_at_the_chosen_level(postgres: tuple[str, str], tmp_path: Path) -> None:
    server_url, bin_dir = postgres
    url = server_url.rsplit("/", 1)[0] + "/compressed"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute("CREATE DATABASE compressed")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE post (id int PRIMARY KEY, body text NOT NULL)")
        connection.execute("INSERT INTO post SELECT i, 'body of post ' || i FROM generate_series(1, 20000) i")
    done = run_tools_job(BUILDERS["backup"](make_spec()), url, tmp_path, bin_dir)
    assert done.returncode == 0, done.stderr
    dump = tmp_path / "web" / "blog-release-42.dump"
    header = subprocess.run([f"{bin_dir}/pg_restore", "--list", str(dump)], capture_output=True, text=True,
                            check=True).stdout
    # The archive's header names what pg_dump used: the gzip level up to PostgreSQL 15, the method from 16 on
    # (whose archives no longer record the level).
    compression = re.search(r"^;\s+Compression: (\S+)$", header, re.MULTILINE)
    assert compression, header
    assert compression[1] == ("zstd" if tools_major(bin_dir) >= 16 else "1")
    uncompressed = tmp_path / "plain.dump"
    subprocess.run([f"{bin_dir}/pg_dump", "--format=custom", "--compress=0", f"--file={uncompressed}", url],
                   check=True)
    assert archive_bytes(dump) < uncompressed.stat().st_size / 4


@pytest.mark.parametrize(("version", "compress", "compression"), [
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", "1", "gzip:1"),
    ("pg_dump (PostgreSQL) 9.6.24", "1", "gzip:1"),
    ("pg_dump (PostgreSQL) 16.4 (Debian 16.4-1.pgdg120+2)", "zstd:1", "zstd:1"),
    ("pg_dump (PostgreSQL) 17devel", "zstd:1", "zstd:1"),
    ("pg_dump (PostgreSQL) 18.1", "zstd:1", "zstd:1"),
])
def test_the_compression_follows_the_tools_major_version(tmp_path: Path, version: str, compress: str,
                                                         compression: str) -> None:
    """Only PostgreSQL 15's tools are here: tools that answer as another version show the script's choice."""
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    (tools / "pg_dump").write_text(f"""#!/bin/sh
if [ "$1" = --version ]; then echo '{version}'; exit 0; fi
echo "$@" >> {calls}
for argument; do case $argument in --file=*) mkdir "${{argument#--file=}}"
  echo archive > "${{argument#--file=}}/toc.dat";; esac; done
""")
    (tools / "pg_restore").write_text("#!/bin/sh\nexit 0\n")
    for tool in tools.iterdir():
        tool.chmod(0o755)
    done = run_tools_job(BUILDERS["backup"](make_spec()), "postgres://nowhere/db", tmp_path, str(tools))
    assert done.returncode == 0, done.stderr
    assert f"--format=directory --jobs={jobs.DUMP_JOBS} --create --compress={compress} " in calls.read_text()
    marker = jobs.parse_marker(done.stdout, jobs.BACKUP_MARKER)
    assert marker is not None and marker["compression"] == compression and marker["sizeBytes"] == len("archive\n")


def test_a_failed_backup_leaves_nothing(postgres: tuple[str, str], tmp_path: Path) -> None:
    _, bin_dir = postgres
    done = run_tools_job(BUILDERS["backup"](make_spec()), "postgres://postgres@127.0.0.1:1/nowhere", tmp_path, bin_dir)
    assert done.returncode != 0
    assert jobs.parse_marker(done.stdout, jobs.BACKUP_MARKER) is None
    assert list((tmp_path / "web").iterdir()) == []  # no .partial left behind


@pytest.fixture
def app_database(postgres: tuple[str, str]) -> Iterator[str]:
    """A database owned by a role without CREATEDB, as many managed databases give an app; its URL."""
    server_url, _ = postgres
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute("CREATE ROLE app LOGIN NOCREATEDB")
        connection.execute("CREATE DATABASE app OWNER app")
    url = server_url.replace("postgres@", "app@").rsplit("/", 1)[0] + "/app"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (id int)")
    yield url
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute("DROP DATABASE app WITH (FORCE)")
        connection.execute("DROP ROLE app")


def test_a_role_that_cannot_create_databases_drops_nothing(postgres: tuple[str, str], app_database: str,
                                                          tmp_path: Path) -> None:
    _, bin_dir = postgres
    backup = run_tools_job(BUILDERS["backup"](make_spec()), app_database, tmp_path, bin_dir)
    assert backup.returncode == 0, backup.stderr
    job = jobs.restore_job(RUN, make_spec(), jobs.backup_path(make_spec(), RUN), "app", LOCAL_TOOLS)
    done = run_tools_job(job, app_database, tmp_path, bin_dir)
    assert done.returncode != 0
    assert "role app may not create databases (it needs CREATEDB): nothing was dropped" in done.stderr
    assert snapshot(app_database)["tables"] == ["kept"]


def test_a_missing_dump_drops_nothing(postgres: tuple[str, str], app_database: str, tmp_path: Path) -> None:
    server_url, bin_dir = postgres
    superuser_url = server_url.rsplit("/", 1)[0] + "/app"
    job = jobs.restore_job(RUN, make_spec(), "/backups/web/none.dump", "app", LOCAL_TOOLS)
    assert run_tools_job(job, superuser_url, tmp_path, bin_dir).returncode != 0
    assert snapshot(app_database)["tables"] == ["kept"]


def test_a_restore_the_server_broke_off_runs_again_once_the_server_answers(tmp_path: Path) -> None:
    # A server of its own: this test stops it.
    with throwaway_postgres() as (server_url, bin_dir):
        url = create_database(server_url, "shop")
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE post (id int PRIMARY KEY, title text NOT NULL)")
            connection.execute("INSERT INTO post SELECT i, 'post ' || i FROM generate_series(1, 300) i")
        before = snapshot(url)
        assert run_tools_job(BUILDERS["backup"](make_spec()), url, tmp_path, bin_dir).returncode == 0
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("DELETE FROM post WHERE id > 100")
        job = jobs.restore_job(RUN, make_spec(), jobs.backup_path(make_spec(), RUN), "shop", LOCAL_TOOLS)
        with stopped(server_url, bin_dir) as start:
            threading.Timer(3.0, start).start()
            done = run_tools_job(job, url, tmp_path, bin_dir)
        assert done.returncode == 0, done.stderr
        assert "attempt 1 broke off: the server went away" in done.stderr
        assert "attempt 2 starts from the DROP" in done.stderr
        marker = jobs.parse_marker(done.stdout, jobs.RESTORE_MARKER)
        assert marker is not None and marker["restored"] is True and marker["attempts"] == 2
        assert snapshot(url) == before


def test_a_restore_that_fails_with_the_server_answering_is_not_tried_again(postgres: tuple[str, str],
                                                                           tmp_path: Path) -> None:
    server_url, bin_dir = postgres
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / f"{RUN.name}.dump").write_bytes(b"not an archive")
    job = jobs.restore_job(RUN, make_spec(), jobs.backup_path(make_spec(), RUN), "app", LOCAL_TOOLS)
    done = run_tools_job(job, server_url.rsplit("/", 1)[0] + "/app", tmp_path, bin_dir)
    assert done.returncode != 0
    assert "broke off" not in done.stderr and "attempt 2" not in done.stderr


# What a restore must give back besides the data: the database's own properties, and who owns what.
PROPERTIES_SETUP = """
CREATE ROLE shop_owner NOLOGIN;
CREATE ROLE shop_app LOGIN CREATEDB IN ROLE shop_owner;
CREATE ROLE shop_reader LOGIN;
CREATE ROLE shop_reports NOLOGIN;
CREATE DATABASE shop OWNER shop_owner;
REVOKE CONNECT ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO shop_reader, shop_app;
COMMENT ON DATABASE shop IS 'the shop''s orders';
ALTER DATABASE shop SET statement_timeout = '5min';
ALTER ROLE shop_reader IN DATABASE shop SET search_path = reporting, public;
"""
PROPERTIES_OBJECTS = """
ALTER SCHEMA public OWNER TO shop_owner;
CREATE SCHEMA reporting AUTHORIZATION shop_reports;
GRANT USAGE ON SCHEMA reporting TO shop_owner, shop_reader;
SET ROLE shop_owner;
CREATE TABLE public.orders (id int PRIMARY KEY, total numeric NOT NULL);
INSERT INTO public.orders SELECT i, i * 1.5 FROM generate_series(1, 100) i;
GRANT SELECT ON public.orders TO shop_reader;
"""


def database_properties(server_url: str) -> dict[str, Any]:
    """Owner, ACL, comment and settings of database shop, the owners of its schemas and tables, and its rows."""
    with psycopg.connect(server_url) as connection:
        database = connection.execute(
            "SELECT pg_get_userbyid(datdba), ARRAY(SELECT unnest(datacl)::text ORDER BY 1), "
            "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'shop'").fetchone()
        settings = connection.execute(
            "SELECT CASE setrole WHEN 0 THEN '(all)' ELSE pg_get_userbyid(setrole) END, setconfig "
            "FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = 'shop' "
            "ORDER BY 1").fetchall()
        connect = connection.execute("SELECT has_database_privilege('public', 'shop', 'CONNECT'), "
                                     "has_database_privilege('shop_reader', 'shop', 'CONNECT')").fetchone()
    with psycopg.connect(server_url.rsplit("/", 1)[0] + "/shop") as connection:
        owners = connection.execute(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname IN ('public', 'reporting') "
            "UNION ALL SELECT relname, pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'orders' "
            "ORDER BY 1").fetchall()
        grants = connection.execute(
            "SELECT ARRAY(SELECT unnest(relacl)::text ORDER BY 1) FROM pg_class WHERE relname = 'orders'").fetchone()
        rows = connection.execute("SELECT count(*), sum(total) FROM orders").fetchone()
    return {"database": database, "connect": connect, "settings": settings, "owners": owners, "grants": grants,
            "rows": rows}


@pytest.fixture
def shop(postgres: tuple[str, str]) -> Iterator[str]:
    """Database shop, owned by a role other than the URL's, with its own properties; the server's URL."""
    server_url, _ = postgres
    with psycopg.connect(server_url, autocommit=True) as connection:
        for statement in filter(str.strip, PROPERTIES_SETUP.split(";")):
            connection.execute(statement.encode())
    with psycopg.connect(server_url.rsplit("/", 1)[0] + "/shop", autocommit=True) as connection:
        for statement in filter(str.strip, PROPERTIES_OBJECTS.split(";")):
            connection.execute(statement.encode())
    yield server_url
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS shop WITH (FORCE)")
        for role in ("shop_app", "shop_reader", "shop_reports", "shop_owner"):
            connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def backup_then_restore(url: str, tmp_path: Path, bin_dir: str) -> subprocess.CompletedProcess[str]:
    """Backs `url` up, lets a migration change the database and its properties, then restores."""
    backup = run_tools_job(BUILDERS["backup"](make_spec()), url, tmp_path, bin_dir)
    assert backup.returncode == 0, backup.stderr
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DELETE FROM orders WHERE id > 50")
        connection.execute("COMMENT ON DATABASE shop IS 'changed'")
        connection.execute("CREATE TABLE added (id int)")
    job = jobs.restore_job(RUN, make_spec(), jobs.backup_path(make_spec(), RUN), "shop", LOCAL_TOOLS)
    return run_tools_job(job, url, tmp_path, bin_dir)


def test_a_restore_gives_back_the_databases_owner_privileges_comment_settings_and_owners(
        shop: str, postgres: tuple[str, str], tmp_path: Path) -> None:
    _, bin_dir = postgres
    before = database_properties(shop)
    assert before["database"][0] == "shop_owner" and len(before["settings"]) == 2
    assert dict(before["owners"]) == {"orders": "shop_owner", "public": "shop_owner", "reporting": "shop_reports"}

    done = backup_then_restore(shop.rsplit("/", 1)[0] + "/shop", tmp_path, bin_dir)  # as the superuser

    assert done.returncode == 0, done.stderr
    assert jobs.parse_marker(done.stdout, jobs.RESTORE_MARKER) == {
        "path": str(tmp_path / "web" / f"{RUN.name}.dump"), "restored": True,
        "kept": ["objectOwners", "owner", "comment", "privileges", "settings"], "notActingAs": "", "refused": 0,
        "attempts": 1}
    assert database_properties(shop) == before


def test_a_role_that_cannot_act_as_every_owner_restores_the_data_and_says_what_it_could_not_keep(
        shop: str, postgres: tuple[str, str], tmp_path: Path) -> None:
    _, bin_dir = postgres
    before = database_properties(shop)
    # shop_app is a member of the database's owner, not of shop_reports, and may not set another role's settings.
    url = shop.replace("postgres@", "shop_app@").rsplit("/", 1)[0] + "/shop"

    done = backup_then_restore(url, tmp_path, bin_dir)

    assert done.returncode == 0, done.stderr
    marker = jobs.parse_marker(done.stdout, jobs.RESTORE_MARKER)
    assert marker is not None
    assert (marker["kept"], marker["notActingAs"], marker["refused"]) == (
        ["comment", "privileges", "settings"], "shop_reports", 1)
    assert "permission denied" in done.stderr  # ALTER ROLE shop_reader IN DATABASE shop: the refusal, in the log
    after = database_properties(shop)
    assert after["rows"] == before["rows"]
    # The same rights, granted by the URL's role, which owns the database and its objects now (--no-owner).
    assert after["connect"] == before["connect"] == (False, True)
    assert after["database"][0] == "shop_app" and after["database"][2] == before["database"][2]
    assert after["settings"] == [row for row in before["settings"] if row[0] == "(all)"]


def test_the_plan_tries_the_tools_image_first_and_refuses_tools_of_another_major_than_the_server(
        postgres: tuple[str, str]) -> None:
    _, bin_dir = postgres
    major = int(subprocess.run([f"{bin_dir}/pg_dump", "--version"], capture_output=True, text=True,
                               check=True).stdout.split()[2].split(".")[0])
    app_only = {"spec": {"containers": [{"name": "django", "image": "shop:1"}]}}
    assert "initContainers" not in jobs.plan_job(RUN, make_spec(), app_only, None)["spec"]["template"]["spec"]
    template = {"spec": {**app_only["spec"], "initContainers": [{"name": "wait-for-db", "image": "busybox"}]}}
    job = jobs.plan_job(RUN, make_spec(), template, ("registry.local/pgtools:stable", major + 1))
    check, app_init = job["spec"]["template"]["spec"]["initContainers"]
    assert (check["name"], check["image"]) == ("tools", "registry.local/pgtools:stable")
    assert app_init["name"] == "wait-for-db"  # the app's own initContainers run after the check
    env = {e["name"]: e["value"] for e in check["env"]} | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    refused = subprocess.run(check["command"], env=env, capture_output=True, text=True, check=False, timeout=30)
    assert refused.returncode != 0
    result = parse_plan_output(refused.stdout)  # read as the plan's own error: the run fails at Planning
    assert result.reason == "ToolsTooOld" and result.error is not None
    assert (f"backup.image: registry.local/pgtools:stable carries pg_dump {major}, older than the server "
            f"(PostgreSQL {major + 1})") in result.error
    newer = subprocess.run(check["command"], env={**env, "SERVER_MAJOR": str(major - 1)}, capture_output=True,
                           text=True, check=False, timeout=30)
    result = parse_plan_output(newer.stdout)
    assert newer.returncode != 0 and result.reason == "ToolsTooNew" and result.error is not None
    assert (f"carries pg_restore {major}, newer than the server (PostgreSQL {major - 1})" in result.error
            and "could not be rolled back" in result.error and f"postgres:{major - 1}" in result.error)
    fits = subprocess.run(check["command"], env={**env, "SERVER_MAJOR": str(major)}, capture_output=True, text=True,
                          check=False, timeout=30)
    assert fits.returncode == 0 and fits.stdout == ""


# --- the rehearsal ------------------------------------------------------------------------------------------


def test_the_rehearsal_copies_first_then_migrates_the_copy_with_the_release_image() -> None:
    django = {"name": "django", "image": "shop:1", "env": [{"name": "DEBUG", "value": "0"}]}
    template = {"spec": {"containers": [django], "initContainers": [{"name": "vault", "image": "vault:1"}],
                         "volumes": [{"name": "config"}]}}
    job = jobs.rehearse_job(RUN, make_spec(app={"deployment": "web", "image": "shop:2"}), template, "shop",
                            LOCAL_TOOLS)
    pod = job["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["copy", "vault"]  # the copy before the app's own
    assert pod["initContainers"][0]["image"] == LOCAL_TOOLS
    assert {v["name"] for v in pod["volumes"]} == {"config", "djangoops-rehearsal"}
    [migrate] = pod["containers"]
    assert migrate["image"] == "shop:2" and job["metadata"]["labels"][STEP_LABEL] == "rehearse"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in migrate["env"]}
    assert env["DJANGOOPS_SCRATCH"] == jobs.scratch_name(RUN) != "shop"
    assert env["DJANGOOPS_URL_ENV"] == "DATABASE_URL"
    assert env["DJANGOOPS_SOURCE_URL"] == {"secretKeyRef": {"name": "shop-db", "key": "DATABASE_URL"}}
    assert "settings_dict" in " ".join(migrate["command"])  # the check that Django points at the copy


def test_the_scratch_name_is_a_plain_identifier_named_after_the_run() -> None:
    name = jobs.scratch_name(RunRef("shop", "Blog.Release-42" + "x" * 80, "uid"))
    assert re.fullmatch(r"djangoops_rehearsal_blog_release_42x+_[0-9a-f]{8}", name) and len(name) <= 63
    assert jobs.scratch_name(RunRef("a", "r", "u")) != jobs.scratch_name(RunRef("b", "r", "u"))


def test_the_rehearsals_copy_fills_a_scratch_database_and_counts_its_rows(postgres: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    server_url, bin_dir = postgres
    url = create_database(server_url, "rehearsed")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        connection.execute("INSERT INTO orders SELECT generate_series(1, 300)")
    spec = make_spec(verify={"rowCounts": ["orders"]})
    job = jobs.rehearse_job(RUN, spec, {"spec": {"containers": [{"name": "django", "image": "shop:1"}]}},
                            "rehearsed", LOCAL_TOOLS)
    copy = job["spec"]["template"]["spec"]["initContainers"][0]
    env = {e["name"]: e["value"] for e in copy["env"] if "value" in e}
    env |= {"DATABASE_URL": url, "REHEARSAL_DUMP": str(tmp_path / "copy.dump"),
            "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run([expand(part, env) for part in copy["command"]], env=env, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    marker = jobs.parse_marker(done.stdout, jobs.REHEARSAL_COPY_MARKER)
    assert marker is not None and marker["rowCounts"] == {"orders": 300} and marker["dumpSeconds"] >= 0
    assert marker["sizeBytes"] > 0
    assert not (tmp_path / "copy.dump").exists()
    scratch = url.rsplit("/", 1)[0] + "/" + jobs.scratch_name(RUN)
    with psycopg.connect(scratch) as connection:
        assert connection.execute("SELECT count(*) FROM orders").fetchone() == (300,)
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(jobs.scratch_name(RUN))))
        connection.execute("DROP DATABASE rehearsed")


# --- the tools image -----------------------------------------------------------------------------------------


def test_the_tools_image_is_the_servers_major_version_unless_backup_image_says_otherwise() -> None:
    unset = make_spec(backup={"image": None})  # as the API server stores a spec without backup.image
    assert jobs.tools_image(unset, 16) == "postgres:16"
    assert jobs.tools_image(make_spec(), 16) == "postgres:17", "backup.image wins"


@pytest.mark.parametrize(("image", "server", "refused"), [
    ("postgres:15", 17, True),
    ("postgres:16.4-bookworm", 17, True),
    ("registry.example:5000/library/postgres:16-alpine", 17, True),
    ("bitnami/postgresql:16.2.0", 17, True),
    ("postgres:17", 17, False),
    ("postgres:17.2-bookworm", 17, False),
    ("postgres:18", 17, True),
    ("postgres:17", 15, True),
    ("postgres", 17, False),  # no tag: cannot be told
    ("registry.example/db-tools:3", 17, False),  # not a PostgreSQL name: cannot be told
    ("postgres@sha256:0123abcd", 17, False),
])
def test_tools_of_another_major_than_the_server_are_refused_naming_backup_image(image: str, server: int,
                                                                               refused: bool) -> None:
    problem = jobs.tools_problem(image, server)
    assert (problem is not None) == refused
    if problem:
        assert problem.startswith(f"backup.image: {image} carries pg_")
        assert problem.endswith(f"set backup.image to postgres:{server}, or remove it and the operator chooses "
                                f"postgres:{server}")
        # Older: pg_dump refuses the server. Newer: its archive need not restore into it, so no rollback.
        assert ("server version mismatch" in problem) != ("could not be rolled back" in problem)
