"""kube.py's one request helper under the client's real transport, against a fake pool: the method, path, query,
headers and body of each call, as the generated API classes sent them; a 404 as None; errors as the ApiException
the driver and lease.py read; a log as text. And that the operator loads none of the generated classes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import urllib3
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException

from django_migration_operator import driver
from django_migration_operator.kube import FIELD_MANAGER, USER_AGENT, Kube, LeaseRecord
from django_migration_operator.resource import RunRef
from django_migration_operator.status import Reason
from tests.operator.fake_api import FakePool, Request, api_client

RUN = RunRef("shop", "release-3", "uid-3")
RUNS = "/apis/djangoops.dev/v1alpha1"
LEASE = "djangoops-db-0fa5eb6d84c88a63"  # the Lease of db:5432/shop
LOG = "line 1\nline 2\n"
JOB = {"metadata": {"name": "release-3-plan", "namespace": "shop"}, "spec": {"backoffLimit": 0}}


class Answering(FakePool):
    """Answers a log with LOG, anything else with `status` and `body` (by default an object every reader can read)."""

    def __init__(self, status: int = 200, body: Any = None) -> None:
        super().__init__()
        self.status = status
        self.body = body if body is not None else {"items": [], "metadata": {"resourceVersion": "7"}, "spec": {}}

    def answer(self, request: Request) -> tuple[int, Any]:
        if request.path.endswith("/log") and self.status == 200:
            return 200, LOG
        return self.status, self.body


def kube_over(pool: FakePool) -> Kube:
    return Kube(lease_namespace="ops", api_client=api_client(pool))


def sent(call: Callable[[Kube], object], pool: FakePool | None = None) -> Request:
    """The one request `call` makes."""
    pool = pool or Answering()
    call(kube_over(pool))
    assert len(pool.requests) == 1, pool.requests
    return pool.requests[0]


# Each call: the method, path, query and Content-Type the generated client sent (read off its code and recorded
# through it before kube.py stopped using it), and the body.
CALLS: list[tuple[str, Callable[[Kube], object], str, str, dict[str, str], str | None, Any]] = [
    ("read_run", lambda k: k.read_run("shop", "release-3"),
     "GET", f"{RUNS}/namespaces/shop/djangomigrations/release-3", {}, None, None),
    ("list_runs in the cluster", lambda k: k.list_runs([]), "GET", f"{RUNS}/djangomigrations", {}, None, None),
    ("list_runs in a namespace", lambda k: k.list_runs(["shop"]),
     "GET", f"{RUNS}/namespaces/shop/djangomigrations", {}, None, None),
    ("patch_run_status", lambda k: k.patch_run_status(RUN, {"phase": "Planning"}),
     "PATCH", f"{RUNS}/namespaces/shop/djangomigrations/release-3/status", {}, "application/merge-patch+json",
     {"status": {"phase": "Planning"}}),
    ("read_deployment", lambda k: k.read_deployment("shop", "web"),
     "GET", "/apis/apps/v1/namespaces/shop/deployments/web", {}, None, None),
    ("list_pods", lambda k: k.list_pods("shop", "app=web"),
     "GET", "/api/v1/namespaces/shop/pods", {"labelSelector": "app=web"}, None, None),
    ("scale_deployment", lambda k: k.scale_deployment("shop", "web", 0, {}),
     "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", {"fieldManager": FIELD_MANAGER},
     "application/strategic-merge-patch+json", {"spec": {"replicas": 0}}),
    ("scale_deployment with images", lambda k: k.scale_deployment("shop", "web", 2, {"django": "shop:3"}),
     "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", {"fieldManager": FIELD_MANAGER},
     "application/strategic-merge-patch+json",
     {"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "django", "image": "shop:3"}]}}}}),
    ("set_images", lambda k: k.set_images("shop", "web", {"django": "shop:3"}),
     "PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", {"fieldManager": FIELD_MANAGER},
     "application/strategic-merge-patch+json",
     {"spec": {"template": {"spec": {"containers": [{"name": "django", "image": "shop:3"}]}}}}),
    ("claim", lambda k: k.claim("shop", "backups"),
     "GET", "/api/v1/namespaces/shop/persistentvolumeclaims/backups", {}, None, None),
    ("read_secret_key", lambda k: k.read_secret_key("shop", "db", "url"),
     "GET", "/api/v1/namespaces/shop/secrets/db", {}, None, None),
    ("create_job", lambda k: k.create_job(JOB), "POST", "/apis/batch/v1/namespaces/shop/jobs", {}, None, JOB),
    ("read_job", lambda k: k.read_job("shop", "release-3-plan"),
     "GET", "/apis/batch/v1/namespaces/shop/jobs/release-3-plan", {}, None, None),
    ("job_pods, none cached", lambda k: k.job_pods("shop", {"metadata": {"name": "release-3-plan", "uid": "u-1"}}),
     "GET", "/api/v1/namespaces/shop/pods", {"labelSelector": "batch.kubernetes.io/controller-uid=u-1"}, None, None),
    ("delete_job", lambda k: k.delete_job("shop", "release-3-plan"),
     "DELETE", "/apis/batch/v1/namespaces/shop/jobs/release-3-plan", {"propagationPolicy": "Foreground"}, None,
     None),
    ("read_pod_log", lambda k: k.read_pod_log("shop", "release-3-plan-x", "django"),
     "GET", "/api/v1/namespaces/shop/pods/release-3-plan-x/log", {"container": "django", "tailLines": "400"}, None,
     None),
    ("lease_holder", lambda k: k.lease_holder("db:5432/shop"),
     "GET", f"/apis/coordination.k8s.io/v1/namespaces/ops/leases/{LEASE}", {}, None, None),
    ("release_lease", lambda k: k.release_lease(RUN), "GET", "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
     {"labelSelector": "djangoops.dev/run=release-3,djangoops.dev/run-namespace=shop"}, None, None),
]


@pytest.mark.parametrize(("call", "method", "path", "query", "content_type", "body"),
                         [case[1:] for case in CALLS], ids=[case[0] for case in CALLS])
def test_each_call_sends_what_the_generated_client_sent(call: Callable[[Kube], object], method: str, path: str,
                                                        query: dict[str, str], content_type: str | None,
                                                        body: Any) -> None:
    request = sent(call)
    assert (request.method, request.path, request.query, request.body) == (method, path, query, body)
    assert request.headers.get("Content-Type") == content_type, "a Content-Type only on a patch, of its kind"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["authorization"] == "Bearer token"


def test_the_query_is_encoded_as_the_generated_client_encodes_it() -> None:
    pods = sent(lambda k: k.list_pods("shop", "app=web,tier=x"))
    assert pods.url.endswith("/pods?labelSelector=app%3Dweb%2Ctier%3Dx")
    log = sent(lambda k: k.read_pod_log("shop", "p", "django"))
    assert log.url.endswith("/pods/p/log?container=django&tailLines=400"), "in the generated client's order"


def test_a_name_is_quoted_whole_in_the_path() -> None:
    assert sent(lambda k: k.read_secret_key("shop", "a/b c", "url")).url.endswith("/namespaces/shop/secrets/a%2Fb%20c")


def test_the_lease_writes_send_the_lease_and_the_version_precondition() -> None:
    created = sent(lambda k: k.acquire_lease(RUN, "db:5432/shop", None))
    assert (created.method, created.path) == ("POST", "/apis/coordination.k8s.io/v1/namespaces/ops/leases")
    assert created.body["metadata"] == {"name": LEASE, "labels": {"djangoops.dev/run": "release-3",
                                                                  "djangoops.dev/run-namespace": "shop"}}
    assert created.body["spec"]["holderIdentity"] == "shop/release-3"
    replaced = sent(lambda k: k.acquire_lease(RUN, "db:5432/shop", "5"))
    assert (replaced.method, replaced.path) == ("PUT", f"/apis/coordination.k8s.io/v1/namespaces/ops/leases/{LEASE}")
    assert replaced.body["metadata"]["resourceVersion"] == "5" and "Content-Type" not in replaced.headers
    held = {"items": [{"metadata": {"name": LEASE, "resourceVersion": "9"}, "spec": {"holderIdentity": RUN.key}}]}
    pool = Answering(body=held)
    kube_over(pool).release_lease(RUN)
    deleted = pool.requests[-1]
    assert (deleted.method, deleted.path) == ("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/ops/leases/{LEASE}")
    assert deleted.body == {"preconditions": {"resourceVersion": "9"}} and "Content-Type" not in deleted.headers


def test_an_event_names_the_run_and_carries_its_times_as_the_api_reads_them() -> None:
    event = sent(lambda k: k.post_event(RUN, "Planning", "m" * 2000, warning=True))
    assert (event.method, event.path) == ("POST", "/api/v1/namespaces/shop/events")
    body = event.body
    assert body["metadata"]["name"].startswith("release-3.")
    assert body["involvedObject"] == {"apiVersion": "djangoops.dev/v1alpha1", "kind": "DjangoMigration",
                                      "name": "release-3", "namespace": "shop", "uid": "uid-3"}
    assert (body["reason"], body["type"], len(body["message"]), body["count"]) == ("Planning", "Warning", 1024, 1)
    assert body["firstTimestamp"] == body["lastTimestamp"] and body["firstTimestamp"].endswith("+00:00")


def test_the_answers_are_the_apis_json() -> None:
    lease = {"metadata": {"name": LEASE, "resourceVersion": "12"}, "spec": {"holderIdentity": "blog/release-7"}}
    assert kube_over(Answering(body=lease)).lease_holder("db:5432/shop") == LeaseRecord("blog/release-7", "12")
    pods = {"items": [{"metadata": {"name": "web-1"}, "status": {"phase": "Running"}}]}
    assert kube_over(Answering(body=pods)).list_pods("shop", "app=web") == pods["items"]
    secret = {"data": {"url": "cG9zdGdyZXM6Ly94"}}
    assert kube_over(Answering(body=secret)).read_secret_key("shop", "db", "url") == "postgres://x"
    claim = {"spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}}
    state = kube_over(Answering(body=claim)).claim("shop", "backups")
    assert state is not None and (state.phase, state.capacity_bytes) == ("Pending", 2**30)


def test_a_log_comes_back_as_text_even_when_it_reads_as_json() -> None:
    assert kube_over(Answering()).read_pod_log("shop", "p", "django") == LOG

    class JsonLookingLog(FakePool):
        def answer(self, request: Request) -> tuple[int, Any]:
            return 200, '{"plan": []}\n'

    assert kube_over(JsonLookingLog()).read_pod_log("shop", "p", "django") == '{"plan": []}\n'


@pytest.mark.parametrize("read", [
    lambda k: k.read_run("shop", "gone"), lambda k: k.read_deployment("shop", "gone"),
    lambda k: k.read_job("shop", "gone"), lambda k: k.read_secret_key("shop", "gone", "url"),
    lambda k: k.claim("shop", "gone"), lambda k: k.lease_holder("db:5432/gone"),
    lambda k: k.delete_job("shop", "gone")], ids=["run", "deployment", "job", "secret", "claim", "lease", "delete"])
def test_a_404_is_none(read: Callable[[Kube], object]) -> None:
    assert read(kube_over(Answering(404, {"kind": "Status", "reason": "NotFound"}))) is None


def test_a_job_created_before_a_restart_is_the_same_job() -> None:
    kube_over(Answering(409, {"kind": "Status", "reason": "AlreadyExists"})).create_job(JOB)


@pytest.mark.parametrize(("status", "reason", "problem"), [
    (403, "Forbidden", Reason.FORBIDDEN), (429, "Too Many Requests", Reason.API_UNAVAILABLE),
    (503, "Service Unavailable", Reason.API_UNAVAILABLE), (422, "Unprocessable Entity", None)])
def test_an_error_is_the_api_exception_the_driver_reads(status: int, reason: str, problem: Reason | None) -> None:
    answer = {"kind": "Status", "message": "pods is forbidden: no", "code": status}
    with pytest.raises(ApiException) as raised:
        kube_over(Answering(status, answer)).list_pods("shop", "app=web")
    error = raised.value
    assert (error.status, error.reason, json.loads(error.body)) == (status, reason, answer)
    found = driver.transient(error)
    assert (found.reason if found else None) == problem
    assert found is None or "pods is forbidden: no" in found.message


def test_an_apiserver_that_does_not_answer_raises_urllib3s_error() -> None:
    class Down(FakePool):
        def answer(self, request: Request) -> tuple[int, Any]:
            raise urllib3.exceptions.MaxRetryError(urllib3.HTTPSConnectionPool("apiserver.test"), request.url,
                                                   ConnectionRefusedError())

    with pytest.raises(urllib3.exceptions.MaxRetryError) as raised:
        kube_over(Down()).read_run("shop", "release-3")
    found = driver.transient(raised.value)
    assert found is not None and found.reason == Reason.API_UNAVAILABLE


def test_the_bearer_token_is_asked_of_the_refresh_hook_for_every_request() -> None:
    """In a cluster, load_incluster_config sets a hook that rereads the projected token once it expired."""
    pool = Answering()
    kube = kube_over(pool)
    configuration: Configuration = kube.api_client.configuration
    tokens = iter(["first", "second"])

    def refresh(config: Configuration) -> None:
        config.api_key["BearerToken"] = next(tokens)

    configuration.refresh_api_key_hook = refresh
    kube.read_run("shop", "a")
    kube.read_run("shop", "b")
    assert [r.headers["authorization"] for r in pool.requests] == ["Bearer first", "Bearer second"]


def test_the_operator_loads_no_generated_api_class_or_model() -> None:
    """They are what cost the memory (docs/architecture.md): in a fresh interpreter, every operator module and one
    Kube load none beyond the three models kopf itself imports (kopf._cogs.helpers.thirdparty)."""
    script = """
import sys
import kopf
from kubernetes.client.api_client import ApiClient
def generated():
    return {m for m in sys.modules if m.startswith(("kubernetes.client.api.", "kubernetes.client.models."))}
by_kopf = generated()
from django_migration_operator import __main__, driver, handlers, kube, lease, observe, validation
kube.Kube(api_client=ApiClient())
print("\\n".join(sorted(generated() - by_kopf)))
"""
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert loaded.split() == []
