"""Pod IPs from the pod network: one per live pod, handed out round-robin so a freed address is not reused at
once (a server of the previous pod may still hold sockets on it). Kept in a file so that a restarted kubelet
gives its pods back the addresses they had."""

from __future__ import annotations

import ipaddress
import json
import threading
from pathlib import Path


class AddressesExhausted(Exception):
    pass


class PodAddresses:
    def __init__(self, network: ipaddress.IPv4Network, state_file: Path) -> None:
        self.candidates = [str(host) for host in network.hosts()]
        self.state_file = state_file
        self.lock = threading.Lock()
        self.owners: dict[str, str] = {}  # address -> pod uid
        self.last_index = -1
        if state_file.exists():
            saved = json.loads(state_file.read_text())
            self.owners = dict(saved.get("owners", {}))
            self.last_index = int(saved.get("lastIndex", -1))

    def allocate(self, pod_uid: str, preferred: str | None = None) -> str:
        with self.lock:
            for address, owner in self.owners.items():
                if owner == pod_uid:
                    return address
            if preferred in self.candidates and preferred not in self.owners:
                return self._take(preferred, pod_uid)
            for step in range(1, len(self.candidates) + 1):
                index = (self.last_index + step) % len(self.candidates)
                if self.candidates[index] not in self.owners:
                    self.last_index = index
                    return self._take(self.candidates[index], pod_uid)
            raise AddressesExhausted(f"all {len(self.candidates)} pod addresses are in use")

    def release(self, pod_uid: str) -> None:
        with self.lock:
            self.owners = {a: o for a, o in self.owners.items() if o != pod_uid}
            self._save()

    def keep_only(self, live_uids: set[str]) -> None:
        """Frees the addresses of pods that no longer exist (after a restart)."""
        with self.lock:
            self.owners = {a: o for a, o in self.owners.items() if o in live_uids}
            self._save()

    def _take(self, address: str, pod_uid: str) -> str:
        self.owners[address] = pod_uid
        self._save()
        return address

    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"owners": self.owners, "lastIndex": self.last_index}))
        temporary.replace(self.state_file)
