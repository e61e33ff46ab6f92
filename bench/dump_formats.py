"""Backup formats at size: pg_dump's formats and compressions against the migration guide's plain dump (issue 10).

`.venv/bin/python -m bench.dump_formats [--posts 1000000] [--repeat 5] [--output FILE] [--tools DIR]`

With `--tools DIR` the archives are made with DIR's pg_dump, and restored with its pg_restore unless it is newer
than the server (then one restore is tried and its error reported: pg_restore 17's archives set
transaction_timeout, which a 15 server refuses). `sh bench/trixie-pg-tools.sh DIR` unpacks PostgreSQL 17's tools,
which have lz4 and zstd. The guide's plain dump and its restore stay the server's own.

1. Starts a PostgreSQL server of its own (the newest under /usr/lib/postgresql/*/bin, in a temporary folder, on a
   free port; no devcluster) and fills a database the way the product's runs find it: the demo blog migrated to
   `0002_populate_categories`, then `manage.py seed_blog --posts N` (BLOG_RELEASE=2).
2. Dumps it --repeat times with each variant (the plain `pg_dump > plain.sql`, `-Fc` at the default gzip level,
   `-Z1`, `-Z0`, `-Fd -j2 -Z1`, lz4 and zstd where pg_dump has them, and the operator's own backup script from
   jobs.py), in a rotated order; wall time, pg_dump's CPU time and the output's size.
3. Times `pg_restore --list` of each archive (the backup's verification), then restores each into a fresh database
   --repeat times: `psql -1 < plain.sql` against `pg_restore --single-transaction --exit-on-error --no-owner`
   (the operator's restore), plus a parallel `pg_restore -j2`, which cannot run in one transaction.
4. Measures the compressors alone on the plain dump (CPU time, ratio), which stands in for the PostgreSQL 16
   methods where only older tools are installed.
5. Prints the tables, ratios to the plain dump, the issue's goals and whether they hold; removes the server, its
   folder and every dump.

The machine is shared and noisy: only ratios within one invocation mean something.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from bench.baseline import archive_bytes
from bench.report import Report, median, progress, spread
from devcluster.config import REPO_ROOT
from devcluster.kubelet.expansion import expand
from django_migration_operator import jobs
from django_migration_operator.resource import RunRef, Spec

BLOG_DIR = REPO_ROOT / "examples" / "blog"
DATABASE = "blog"
# The goals, at 1M posts: the backup at most 1.1x the plain dump's time and 25% of its size, the restore
# at most 1.1x `psql < backup.sql`.
TIME_GOAL = 1.10
SIZE_GOAL = 0.25
RESTORE_GOAL = 1.10


# --- the server ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    base_url: str  # postgres://postgres@127.0.0.1:PORT (no database)
    bin_dir: Path  # the server's own programs: its tools make the guide's plain dump and restore it
    major: int
    tools_dir: Path  # the archives' pg_dump and pg_restore: the server's own, or --tools
    tools_major: int

    def url(self, database: str) -> str:
        return f"{self.base_url}/{database}"

    def tool(self, name: str) -> str:
        """One of the archives' tools (pg_dump refuses a server newer than itself: never older than the server's)."""
        return str(self.tools_dir / name)


@contextmanager
def throwaway_server(tools: Path | None) -> Iterator[Server]:
    """A PostgreSQL server in a temporary folder, stopped and removed at the end whatever happens; its clients are
    the tools in `tools` when given, else its own."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not initdbs:
        raise SystemExit("no PostgreSQL server under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    bin_dir = Path(initdbs[-1]).parent
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    folder = Path(tempfile.mkdtemp(prefix="bench-dump-formats-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    started = False
    try:
        subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--encoding=UTF8", "--locale=C.UTF-8"], check=True, capture_output=True)
        # The server's default settings (shared_buffers, fsync on): the figures are those of a stock server.
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        started = True
        tools = tools or bin_dir
        version = subprocess.run([str(tools / "pg_dump"), "--version"], check=True, capture_output=True, text=True)
        major = int(version.stdout.split(")")[1].split(".")[0])  # "pg_dump (PostgreSQL) 17.12 (Debian ...)"
        yield Server(f"postgres://postgres@127.0.0.1:{port}", bin_dir, int(str(bin_dir).split("/")[4]), tools, major)
    finally:
        if started:
            subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                           check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def admin(server: Server, statement: sql.Composed) -> None:
    with psycopg.connect(server.url("postgres"), autocommit=True) as connection:
        connection.execute(statement)


def scalar(server: Server, database: str, query: str) -> object:
    with psycopg.connect(server.url(database)) as connection:
        row = connection.execute(query.encode()).fetchone()
        return row[0] if row else None


def fresh_database(server: Server, name: str) -> None:
    admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin(server, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(server: Server, name: str) -> None:
    admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- running and timing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    wall: float
    cpu: float  # user + system seconds of the command and every process it waited for
    stdout: str


def timed(command: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
          stdin: Path | None = None, stdout: Path | None = None) -> Timed:
    """Runs a command and returns its wall and CPU time; a failure never shows the command line (URLs)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with (stdin.open("rb") if stdin else open(os.devnull, "rb")) as source, (
            stdout.open("wb") if stdout else tempfile.TemporaryFile()) as sink:
        result = subprocess.run(list(command), env=env, cwd=cwd, stdin=source, stdout=sink, stderr=subprocess.PIPE,
                                check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace')[-800:]}")
        output = b""
        if not stdout:
            sink.seek(0)
            output = sink.read()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, cpu, output.decode(errors="replace"))


def tools_env(server: Server) -> dict[str, str]:
    return {**os.environ, "PATH": f"{server.tools_dir}:{os.environ['PATH']}", "PGCONNECT_TIMEOUT": "10"}


# --- the variants --------------------------------------------------------------------------------------------


@dataclass
class Dump:
    name: str  # as the tables show it
    kind: str  # plain | archive | script
    options: tuple[str, ...] = ()
    needs_major: int = 0  # lz4 and zstd came with pg_dump 16
    output: Path = Path()
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    lists: list[float] = field(default_factory=list)
    restores: list[float] = field(default_factory=list)
    note: str = ""


def variants(workdir: Path) -> list[Dump]:
    dumps = [
        Dump("plain: pg_dump > plain.sql", "plain"),
        Dump("-Fc (default gzip level)", "archive", ("--format=custom",)),
        Dump("-Fc -Z1 (gzip 1)", "archive", ("--format=custom", "--compress=1")),
        Dump("-Fc -Z0 (none)", "archive", ("--format=custom", "--compress=0")),
        Dump("-Fd -Z1 (one job)", "archive", ("--format=directory", "--compress=1")),
        Dump("-Fd -j2 -Z1", "archive", ("--format=directory", "--jobs=2", "--compress=1")),
        Dump("-Fc --compress=lz4", "archive", ("--format=custom", "--compress=lz4"), needs_major=16),
        Dump("-Fc --compress=zstd:1", "archive", ("--format=custom", "--compress=zstd:1"), needs_major=16),
        Dump("-Fc --compress=zstd (level 3)", "archive", ("--format=custom", "--compress=zstd"), needs_major=16),
        Dump("operator: backup script of jobs.py", "script"),
    ]
    for number, dump in enumerate(dumps):
        dump.output = workdir / (f"dump{number}.sql" if dump.kind == "plain" else
                                 f"dump{number}.dir" if "--format=directory" in dump.options else
                                 f"operator/web/dump{number}.dump" if dump.kind == "script" else
                                 f"dump{number}.dump")
    return dumps


def operator_backup_command(output: Path, database_url: str, server: Server) -> tuple[list[str], dict[str, str]]:
    """The backup Job's container as the kubelet would run it here: its script, its env, the claim at workdir."""
    spec = Spec.from_body({"app": {"deployment": "web"},
                           "database": {"urlSecret": {"name": "db", "key": "DATABASE_URL"}},
                           "backup": {"volumeClaim": "backups", "keep": 1}})
    mount = output.parent.parent  # .../operator, which holds web/<run>.dump as the claim would
    run = RunRef("bench", output.stem, "uid")
    job = jobs.backup_job(run, spec, jobs.backup_path(spec, run), f"postgres:{server.tools_major}")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["BACKUP_PATH"] = env["BACKUP_PATH"].replace(jobs.BACKUP_MOUNT, str(mount), 1)
    env["TERMINATION_MESSAGE_PATH"] = str(output.with_suffix(".termination-log"))  # the kubelet's file, here
    env = {**tools_env(server), **env, "DATABASE_URL": database_url}
    return [expand(part, env) for part in container["command"]], env


def run_dump(dump: Dump, server: Server) -> Timed:
    url = server.url(DATABASE)
    if dump.output.is_dir():
        shutil.rmtree(dump.output)  # pg_dump -Fd wants a folder that does not exist
    elif dump.output.exists():
        dump.output.unlink()
    if dump.kind == "plain":  # the migration guide's `pg_dump > backup.sql`
        return timed([str(server.bin_dir / "pg_dump"), f"--dbname={url}"], stdout=dump.output)
    if dump.kind == "script":
        dump.output.parent.mkdir(parents=True, exist_ok=True)
        command, env = operator_backup_command(dump.output, url, server)
        done = timed(command, env=env)
        marker = jobs.parse_marker(done.stdout, jobs.BACKUP_MARKER) or {}
        dump.note = f"marker: format {marker.get('format')}, compression {marker.get('compression')}"
        return done
    return timed([server.tool("pg_dump"), *dump.options, f"--file={dump.output}", f"--dbname={url}"])


def restorable_dumps(dumps: list[Dump], server: Server) -> tuple[list[Dump], str]:
    """The dumps whose restore can be timed, and why the others cannot: all can, unless the archives' tools are
    newer than the server, whose archives PostgreSQL does not promise to restore into it. Then one is tried."""
    if server.tools_major <= server.major:
        return dumps, ""
    fresh_database(server, "restored")
    try:
        run_restore(dumps[1], server, "restored")
        outcome = "restored, but is not timed"
    except RuntimeError as error:
        outcome = f"failed: {str(error).splitlines()[0]}"
    return dumps[:1], (f"the archives of pg_dump {server.tools_major} are not restored into the "
                       f"{server.major} server: {dumps[1].name} {outcome}")


def run_restore(dump: Dump, server: Server, database: str, *, parallel: bool = False) -> float:
    url = server.url(database)
    if dump.kind == "plain":  # the guide's restore: `psql -1 < backup.sql`, stopping at the first error
        return timed([str(server.bin_dir / "psql"), "--no-psqlrc", "--quiet", "--single-transaction",
                      "--set=ON_ERROR_STOP=1", f"--dbname={url}"], stdin=dump.output).wall
    # The operator's restore (jobs.py _RESTORE_SCRIPT) into a database it has just created; -j2 is what a
    # parallel restore would give, at the price of the single transaction.
    mode = ["--jobs=2"] if parallel else ["--single-transaction"]
    return timed([server.tool("pg_restore"), *mode, "--exit-on-error", "--no-owner", f"--dbname={url}",
                  str(dump.output)]).wall


# --- the compressors alone -----------------------------------------------------------------------------------


@dataclass
class Compressor:
    name: str
    compress: tuple[str, ...]  # a command reading the file named last; () for zlib in this process
    decompress: tuple[str, ...]
    level: int = 0  # zlib's
    cpu: list[float] = field(default_factory=list)
    decompress_cpu: list[float] = field(default_factory=list)
    size: int = 0


COMPRESSORS = (
    # pg_dump's gzip is zlib, which Python links too: measured in this process, it is the library pg_dump runs
    # (GNU gzip's own deflate would be about twice as slow).
    Compressor("zlib 1 (pg_dump -Z1)", (), (), level=1),
    Compressor("zlib 6 (pg_dump -Fc default)", (), (), level=6),
    # The command-line tools use liblz4 and libzstd, the libraries of pg_dump 16's lz4 and zstd.
    Compressor("lz4 -1", ("lz4", "-1", "-c"), ("lz4", "-d", "-c")),
    Compressor("zstd -1", ("zstd", "-1", "-c", "-T1"), ("zstd", "-d", "-c")),
    Compressor("zstd -3 (zstd's default)", ("zstd", "-3", "-c", "-T1"), ("zstd", "-d", "-c")),
)


def zlib_cpu(source: Path, packed: Path, level: int) -> tuple[float, float]:
    """CPU seconds of this process to deflate `source` at `level` into `packed`, then to inflate it."""
    started = time.process_time()
    deflate = zlib.compressobj(level)
    with source.open("rb") as reader, packed.open("wb") as writer:
        while chunk := reader.read(1 << 20):
            writer.write(deflate.compress(chunk))
        writer.write(deflate.flush())
    compressed = time.process_time() - started
    started = time.process_time()
    inflate = zlib.decompressobj()
    with packed.open("rb") as reader:
        while chunk := reader.read(1 << 20):
            inflate.decompress(chunk)
    return compressed, time.process_time() - started


def measure_compressors(plain: Path, workdir: Path, repeat: int) -> list[Compressor]:
    """The compressors' own CPU time on the plain dump: what each method would add to pg_dump's one thread."""
    measured = []
    for number, compressor in enumerate(COMPRESSORS):
        if compressor.compress and not shutil.which(compressor.compress[0]):
            continue
        packed = workdir / f"packed{number}"
        for _ in range(repeat):
            if not compressor.compress:
                cpu, decompress_cpu = zlib_cpu(plain, packed, compressor.level)
            else:
                cpu = timed([*compressor.compress, str(plain)], stdout=packed).cpu
                decompress_cpu = timed([*compressor.decompress, str(packed)], stdout=Path(os.devnull)).cpu
            compressor.cpu.append(cpu)
            compressor.decompress_cpu.append(decompress_cpu)
        compressor.size = packed.stat().st_size
        packed.unlink()
        measured.append(compressor)
    return measured


# --- the report ----------------------------------------------------------------------------------------------


def holds(value: float, goal: float) -> str:
    return "yes" if value <= goal else "NO"


def report(out: Report, dumps: list[Dump], compressors: list[Compressor], parallel: list[float],
           server: Server, restore_note: str) -> None:
    measured = [d for d in dumps if d.walls]
    plain = dumps[0]
    plain_wall, plain_size, plain_restore = median(plain.walls), plain.sizes[-1], median(plain.restores)
    # The fastest run as well as the median: noise on a shared machine only ever adds time.
    out.table(
        "1. Dumps (wall and pg_dump CPU seconds: median and fastest of the runs; size of the last run)",
        ["dump", "wall (s)", "min (s)", "runs", "x plain", "x plain (min)", "CPU (s)", "size (bytes)", "% of plain"],
        [[d.name, f"{median(d.walls):.2f}", f"{min(d.walls):.2f}", spread(d.walls),
          f"{median(d.walls) / plain_wall:.2f}", f"{min(d.walls) / min(plain.walls):.2f}", f"{median(d.cpus):.2f}",
          f"{d.sizes[-1]:,}", f"{100 * d.sizes[-1] / plain_size:.1f}%"] for d in measured],
        [*(f"{d.name}: {d.note}" for d in dumps if d.note),
         "CPU: user + system of pg_dump (and, for the script, of pg_restore --list and the shell); the server's "
         "own work is not in it"])
    rows = [[d.name, f"{median(d.restores):.2f}", f"{min(d.restores):.2f}", spread(d.restores),
             f"{median(d.restores) / plain_restore:.2f}", f"{min(d.restores) / min(plain.restores):.2f}",
             f"{median(d.lists):.3f}" if d.lists else "-"] for d in measured if d.restores]
    if parallel:
        rows.append(["-Fc -Z1, pg_restore -j2 (no single transaction)", f"{median(parallel):.2f}",
                     f"{min(parallel):.2f}", spread(parallel), f"{median(parallel) / plain_restore:.2f}",
                     f"{min(parallel) / min(plain.restores):.2f}", "-"])
    out.table(
        "2. Restores into a fresh database (median and fastest of the runs)",
        ["archive restored", "restore (s)", "min (s)", "runs", "x psql", "x psql (min)",
         "verify: pg_restore --list (s)"], rows,
        ["plain: psql --single-transaction -v ON_ERROR_STOP=1 < plain.sql; archives: pg_restore --single-transaction "
         "--exit-on-error --no-owner (the operator's Restoring step)", *filter(None, [restore_note])])
    if compressors:
        zlib1 = compressors[0]
        out.table(
            "3. The compressors alone on plain.sql (CPU seconds of one thread, median; stands in for pg_dump 16's "
            "methods)",
            ["compressor", "compress CPU (s)", "MB/s", "x zlib 1", "decompress CPU (s)", "size (bytes)",
             "% of plain"],
            [[c.name, f"{median(c.cpu):.2f}", f"{plain_size / 1e6 / max(median(c.cpu), 1e-9):.0f}",
              f"{median(c.cpu) / median(zlib1.cpu):.2f}", f"{median(c.decompress_cpu):.2f}", f"{c.size:,}",
              f"{100 * c.size / plain_size:.1f}%"] for c in compressors],
            ["pg_dump compresses in its one thread, so a method's compress CPU is roughly what it adds to pg_dump's "
             "CPU (compare table 1: -Z1 - -Z0); pg_dump -Fc compresses each table's data on its own, so its sizes "
             "differ a little"])
    script = dumps[-1]
    if script.walls:
        backup = median(script.walls) / plain_wall
        goals = [[f"backup time <= {TIME_GOAL}x plain dump",
                  f"{median(script.walls):.2f} / {plain_wall:.2f} s = {backup:.3f}x",
                  f"{min(script.walls) / min(plain.walls):.3f}x", holds(backup, TIME_GOAL)],
                 [f"archive size <= {SIZE_GOAL:.0%} of plain dump", f"{script.sizes[-1]:,} / {plain_size:,} = "
                  f"{script.sizes[-1] / plain_size:.1%}", "", holds(script.sizes[-1] / plain_size, SIZE_GOAL)]]
        if script.restores:
            restore = median(script.restores) / plain_restore
            goals.append([f"restore (pg_restore --single-transaction) <= {RESTORE_GOAL}x psql < plain.sql",
                          f"{median(script.restores):.2f} / {plain_restore:.2f} s = {restore:.3f}x",
                          f"{min(script.restores) / min(plain.restores):.3f}x", holds(restore, RESTORE_GOAL)])
        out.table(
            f"4. The issue's goals, with the operator's backup script (pg_dump {server.tools_major}; medians)",
            ["goal", "measured", "fastest runs", "holds"], goals,
            ["the backup script's time includes its pg_restore --list check; the BackingUp phase adds the Job's "
             "own overhead (bench/timings.py)"])


# --- main ----------------------------------------------------------------------------------------------------


def seed(server: Server, posts: int) -> float:
    """The product's data: the blog's own migrate and seed_blog, as bench/timings.py prepares its databases."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BLOG_RELEASE", "BLOG_DRILLS")}
    env |= {"DATABASE_URL": server.url(DATABASE), "BLOG_RELEASE": "2", "PYTHONUNBUFFERED": "1"}
    manage = [sys.executable, "manage.py"]
    timed([*manage, "migrate", "blog", "0002_populate_categories", "--noinput"], env=env, cwd=BLOG_DIR)
    return timed([*manage, "seed_blog", "--posts", str(posts)], env=env, cwd=BLOG_DIR).wall


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dump_formats", description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000, help="posts in the database (default 1000000)")
    # Five runs at least: on a shared machine one restore can vary by 20%, which is twice the margin of the goals.
    parser.add_argument("--repeat", type=int, default=5, help="runs of every dump and restore (default 5, min 2)")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    parser.add_argument("--tools", type=Path, help="a folder with the pg_dump and pg_restore to make and restore the "
                        "archives with, instead of the server's own; the plain dump stays the server's own "
                        "(bench/trixie-pg-tools.sh makes one of PostgreSQL 17)")
    args = parser.parse_args(argv)
    repeat = max(args.repeat, 2)
    out = Report()
    workdir = Path(tempfile.mkdtemp(prefix="bench-dump-formats-"))
    try:
        with throwaway_server(args.tools) as server:
            fresh_database(server, DATABASE)
            progress(f"seeding {args.posts} posts with the blog's seed_blog")
            seeding = seed(server, args.posts)
            # VACUUM sets the hint bits and the visibility map now: otherwise the first dump to read the fresh
            # rows would write them, and be slower than the rest. A first plain dump, not counted, warms the cache.
            with psycopg.connect(server.url(DATABASE), autocommit=True) as connection:
                connection.execute("VACUUM (ANALYZE)")
            dumps = variants(workdir)
            timed([str(server.bin_dir / "pg_dump"), f"--dbname={server.url(DATABASE)}"], stdout=dumps[0].output)
            out.line(f"bench.dump_formats  {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  {platform.node()}  "
                     f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
                     "at the start")
            out.line(f"{timed([server.tool('pg_dump'), '--version']).stdout.strip()} against the bench's own server "
                     f"({scalar(server, DATABASE, 'SELECT version()')!s:.40}...), default settings; "
                     f"Python {platform.python_version()}")
            out.line(f"database: blog at 0002, {scalar(server, DATABASE, 'SELECT count(*) FROM blog_post')} posts "
                     f"(seed_blog took {seeding:.1f} s), "
                     f"{scalar(server, DATABASE, 'SELECT pg_database_size(current_database())')} bytes on disk; "
                     f"{repeat} runs of each, in a rotated order")
            available = [d for d in dumps if server.tools_major >= d.needs_major]
            for d in dumps:
                if d not in available:
                    d.note = f"not measured: needs pg_dump {d.needs_major}+, this is {server.tools_major}"
            for number in range(repeat):
                # Rotated, so that no variant always runs first or right after the same neighbour.
                shift = number * len(available) // repeat
                for dump in available[shift:] + available[:shift]:
                    done = run_dump(dump, server)
                    dump.walls.append(done.wall)
                    dump.cpus.append(done.cpu)
                    dump.sizes.append(archive_bytes(dump.output))
                progress(f"dumps {number + 1}/{repeat}: " + ", ".join(f"{d.name.split(' (')[0]} {d.walls[-1]:.2f}s"
                                                                     for d in available))
            for dump in available[1:]:
                dump.lists = [timed([server.tool("pg_restore"), "--list", str(dump.output)]).wall
                              for _ in range(repeat)]
            restorable, restore_note = restorable_dumps(available, server)
            parallel: list[float] = []
            for number in range(repeat):
                shift = number * len(restorable) // repeat
                for dump in restorable[shift:] + restorable[:shift]:
                    fresh_database(server, "restored")
                    dump.restores.append(run_restore(dump, server, "restored"))
                    restored = scalar(server, "restored", "SELECT count(*) FROM blog_post")
                    if restored != args.posts:
                        raise RuntimeError(f"{dump.name}: restored {restored} posts, not {args.posts}")
                if dumps[2] in restorable:
                    fresh_database(server, "restored")
                    parallel.append(run_restore(dumps[2], server, "restored", parallel=True))
                progress(f"restores {number + 1}/{repeat}: " + ", ".join(
                    f"{d.name.split(' (')[0]} {d.restores[-1]:.2f}s" for d in restorable))
            drop_database(server, "restored")
            progress("compressors alone on plain.sql")
            compressors = measure_compressors(dumps[0].output, workdir, repeat)
            report(out, dumps, compressors, parallel, server, restore_note)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(out.lines) + "\n")
        progress(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
