"""HTTP load on the demo blog: posts created through the web pods, every acknowledged one remembered.

Used by the e2e tests (no acknowledged write may be lost, no request may fail online) and by bench/online.py.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import psycopg

from demo.stack import BlogStack


class LoadGenerator:
    """Keeps creating posts through the web pods' HTTP API and remembers every one the app acknowledged (201).

    Requests that fail (pods stopped, connection refused, 503) are not acknowledged: nothing is promised for them.
    Like a Service, it sends only to Ready pods that are not being deleted, and it keeps the slowest answer.
    """

    def __init__(self, stack: BlogStack) -> None:
        self.stack = stack
        self.acknowledged: list[int] = []
        self.refused = 0
        self.slowest = 0.0  # seconds, of the requests that were answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _pod_ips(self) -> list[str]:
        result = self.stack.kubectl("get", "pods", "-n", self.stack.namespace, "-l",
                                    "app.kubernetes.io/component=web", "-o", "json", check=False)
        if result.returncode != 0:
            return []
        return [p["status"]["podIP"] for p in json.loads(result.stdout)["items"]
                if p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")
                and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]

    def _run(self) -> None:
        ips: list[str] = []
        refreshed = 0.0
        number = 0
        while not self._stop.is_set():
            if time.monotonic() - refreshed > 0.5:
                ips, refreshed = self._pod_ips(), time.monotonic()
            if not ips:
                time.sleep(0.05)
                continue
            number += 1
            body = json.dumps({"title": f"load {number}", "category": "Science"}).encode()
            request = urllib.request.Request(f"http://{ips[number % len(ips)]}:8000/posts/", data=body,
                                             headers={"Content-Type": "application/json"}, method="POST")
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.slowest = max(self.slowest, time.monotonic() - sent)
                    if response.status == 201:
                        self.acknowledged.append(int(json.loads(response.read())["id"]))
                        continue
            except (urllib.error.URLError, OSError, ValueError):
                pass
            self.refused += 1
            time.sleep(0.02)

    def missing(self) -> list[int]:
        """Acknowledged posts that are not in the database."""
        with psycopg.connect(self.stack.database_url) as connection:
            found = {post_id for (post_id,) in connection.execute("SELECT id FROM blog_post")}
        return [post_id for post_id in self.acknowledged if post_id not in found]
