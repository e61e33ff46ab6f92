"""The DjangoMigration resource as typed values: read once from the object's spec, used everywhere.

The CRD (crds/) validates and defaults the spec at apply time, so parsing here trusts its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GROUP = "djangoops.dev"
VERSION = "v1alpha1"
PLURAL = "djangomigrations"
KIND = "DjangoMigration"

# Labels on every child object, so a Job or Lease names the run it belongs to.
RUN_LABEL = f"{GROUP}/run"
RUN_NAMESPACE_LABEL = f"{GROUP}/run-namespace"  # on the Lease, which lives outside the run's namespace
STEP_LABEL = f"{GROUP}/step"


@dataclass(frozen=True)
class Check:
    name: str
    sql: str
    expect: str


@dataclass(frozen=True)
class WebhookRef:
    """spec.notify[]: a webhook whose URL is in a Secret of the run's namespace."""

    name: str
    secret: str
    key: str
    format: str  # Slack or JSON
    timeout_seconds: int


@dataclass(frozen=True)
class Spec:
    deployment: str
    container: str | None
    image: str | None
    stop: tuple[str, ...]
    url_secret: str
    url_key: str
    alias: str
    migrate_app: str | None
    migrate_target: str | None
    migration_classes: dict[str, str]  # app.name -> expand or contract: a reviewer's class for an unknown one
    timeout_seconds: int
    backup_enabled: bool
    backup_claim: str | None
    backup_keep: int
    backup_timeout_seconds: int
    backup_image: str | None  # None: the official image of the server's major version (jobs.tools_image)
    row_count_tables: tuple[str, ...]
    checks: tuple[Check, ...]
    strategy: str
    on_failure: str
    approval: str
    job_template: dict[str, Any] = field(default_factory=dict)
    start_timeout_seconds: int = 300  # how long a step's pod may take to start before the step fails
    rehearsal: bool = False  # migrate a scratch copy first, while the app serves
    rehearsal_url_env: str = "DATABASE_URL"  # the variable the app's settings read the database URL from
    window: dict[str, Any] = field(default_factory=dict)  # the maintenance window (window.py); {}: any time
    notify: tuple[WebhookRef, ...] = ()  # webhooks told of the phases that matter to people

    @property
    def deployments(self) -> tuple[str, ...]:
        """Every Deployment the run stops and starts again: the app first, then `app.stop`."""
        return (self.deployment, *(d for d in self.stop if d != self.deployment))

    @classmethod
    def from_body(cls, spec: dict[str, Any]) -> Spec:
        app = spec.get("app", {})
        database = spec.get("database", {})
        url_secret = database.get("urlSecret", {})
        migrate = spec.get("migrate", {})
        backup = spec.get("backup", {})
        verify = spec.get("verify", {})
        return cls(
            deployment=app.get("deployment", ""),
            container=app.get("container"),
            image=app.get("image"),
            stop=tuple(app.get("stop", [])),
            url_secret=url_secret.get("name", ""),
            url_key=url_secret.get("key", ""),
            alias=database.get("alias", "default"),
            migrate_app=migrate.get("app"),
            migrate_target=migrate.get("target"),
            migration_classes=dict(migrate.get("classes", {})),
            timeout_seconds=int(migrate.get("timeoutSeconds", 3600)),
            backup_enabled=bool(backup.get("enabled", True)),
            backup_claim=backup.get("volumeClaim"),
            backup_keep=int(backup.get("keep", 5)),
            backup_timeout_seconds=int(backup.get("timeoutSeconds", 7200)),
            backup_image=backup.get("image"),
            row_count_tables=tuple(verify.get("rowCounts", [])),
            checks=tuple(Check(c["name"], c["sql"], str(c.get("expect", "0"))) for c in verify.get("checks", [])),
            strategy=spec.get("strategy", "Offline"),
            on_failure=spec.get("onFailure", "Restore"),
            approval=spec.get("approval", "Automatic"),
            job_template=dict(spec.get("jobTemplate", {})),
            start_timeout_seconds=int(spec.get("jobTemplate", {}).get("startTimeoutSeconds", 300)),
            rehearsal=bool(spec.get("rehearsal", {}).get("enabled", False)),
            rehearsal_url_env=spec.get("rehearsal", {}).get("urlEnv", "DATABASE_URL"),
            window=dict(spec.get("window", {})),
            notify=tuple(WebhookRef(hook["name"], hook["urlSecret"]["name"], hook["urlSecret"]["key"],
                                    hook.get("format", "JSON"), int(hook.get("timeoutSeconds", 5)))
                         for hook in spec.get("notify", [])),
        )


@dataclass(frozen=True)
class RunRef:
    """Identifies one DjangoMigration object: what child objects point back to."""

    namespace: str
    name: str
    uid: str

    @property
    def key(self) -> str:
        """namespace/name: how a Lease, which lives in one namespace for every run, names its holder."""
        return f"{self.namespace}/{self.name}"

    def owner_reference(self) -> dict[str, Any]:
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}
