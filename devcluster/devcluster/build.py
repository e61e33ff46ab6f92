"""Builds the control plane from Go modules, once per machine and version.

Kubernetes is built from a wrapper module (devcluster/gomod/kubernetes) that requires k8s.io/kubernetes and
replaces every staging module with its published v0.Y.Z twin, as upstream's own go.mod replaces them with
./staging folders. etcd likewise (devcluster/gomod/etcd). Helm builds with a plain `go install`.
Binaries land in the user's cache folder under a folder named by version, written atomically, so a second
run finds them and a killed build leaves nothing half-made behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devcluster.config import ETCD_VERSION, GOMOD_DIR, HELM_VERSION, KUBERNETES_VERSION, cache_dir

Log = Callable[[str], None]
KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


@dataclass(frozen=True)
class Binaries:
    kubernetes_dir: Path
    etcd: Path
    helm: Path

    def kube(self, name: str) -> Path:
        return self.kubernetes_dir / name

    @property
    def kubectl(self) -> Path:
        return self.kube("kubectl")

    @property
    def path_dirs(self) -> list[Path]:
        """Folders to put on PATH so kubectl, helm and etcd are found by name."""
        return [self.kubernetes_dir, self.etcd.parent, self.helm.parent]


def binaries() -> Binaries:
    """Where the binaries are (built or not)."""
    root = cache_dir()
    return Binaries(
        kubernetes_dir=root / f"kubernetes-{KUBERNETES_VERSION}",
        etcd=root / f"etcd-{ETCD_VERSION}" / "etcd",
        helm=root / f"helm-{HELM_VERSION}" / "helm",
    )


def ensure_binaries(log: Log | None = None) -> Binaries:
    """Builds what is missing from the cache and returns the binaries."""
    say = log or _print
    bins = binaries()
    k8s_ldflags = _kubernetes_version_ldflags(KUBERNETES_VERSION)
    if not all((bins.kubernetes_dir / c).exists() for c in KUBERNETES_COMMANDS):
        packages = [f"k8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS]
        _build_into(bins.kubernetes_dir, say, f"Kubernetes {KUBERNETES_VERSION} ({', '.join(KUBERNETES_COMMANDS)})",
                    ["go", "build", "-tags", "selinux,notest", "-trimpath", "-ldflags", k8s_ldflags,
                     "-o", "{out}/", *packages], cwd=GOMOD_DIR / "kubernetes")
    if not bins.etcd.exists():
        _build_into(bins.etcd.parent, say, f"etcd {ETCD_VERSION}",
                    ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "{out}/etcd", "."],
                    cwd=GOMOD_DIR / "etcd")
    if not bins.helm.exists():
        helm_ldflags = (f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION} "
                        "-X helm.sh/helm/v3/internal/version.metadata= "
                        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean")
        _build_into(bins.helm.parent, say, f"helm {HELM_VERSION}",
                    ["go", "install", "-trimpath", "-ldflags", helm_ldflags,
                     f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"], cwd=GOMOD_DIR, gobin=True)
    return bins


def _print(message: str) -> None:
    print(f"devcluster: {message}", file=sys.stderr, flush=True)


def _kubernetes_version_ldflags(version: str) -> str:
    # Without the stamp the server reports v0.0.0 and Helm refuses to talk to it.
    major, minor = re.match(r"v(\d+)\.(\d+)\.", version).groups()  # type: ignore[union-attr]
    stamp = "k8s.io/component-base/version"
    return (f"-s -w -X {stamp}.gitVersion={version} -X {stamp}.gitMajor={major} -X {stamp}.gitMinor={minor} "
            f"-X {stamp}.gitTreeState=clean -X {stamp}.buildDate={_build_date()}")


def _build_date() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _go_env(gobin: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-buildvcs=false -mod=readonly")
    if gobin is not None:
        env["GOBIN"] = str(gobin)
        env["GOFLAGS"] = "-buildvcs=false"
    return env


def _build_into(target: Path, say: Log, what: str, command: list[str], cwd: Path, gobin: bool = False) -> None:
    if shutil.which("go") is None:
        raise SystemExit("devcluster: `go` is not on PATH; install Go 1.26 (the wrapper modules need go 1.26.0)")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"building {what}: paid once per machine, this takes several minutes on 2 cores ...")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        argv = [part.replace("{out}", str(out)) for part in command]
        log_path = target.parent / f"{target.name}.build.log"
        with log_path.open("w") as log:
            result = subprocess.run(argv, cwd=cwd, env=_go_env(out if gobin else None),
                                    stdout=log, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"devcluster: building {what} failed (exit {result.returncode}); "
                             f"full log: {log_path}\n{tail}")
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    say(f"built {what} in {time.monotonic() - started:.0f}s -> {target}")


def write_kubernetes_gomod(version: str = KUBERNETES_VERSION) -> None:
    """Regenerates the Kubernetes wrapper's go.mod for a new version (run when bumping KUBERNETES_VERSION).

    The staging list changes between releases, so it is read from that release's own go.mod.
    """
    module_dir = GOMOD_DIR / "kubernetes"
    info = json.loads(subprocess.run(["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                                     capture_output=True, text=True, check=True, env=_go_env()).stdout)
    upstream = Path(info["GoMod"]).read_text()
    staging = re.findall(r"^\s+(k8s\.io/[\w.-]+) => \./staging/", upstream, flags=re.M)
    go_line = re.search(r"^go .+$", upstream, flags=re.M)
    godebug = re.search(r"^godebug .+$", upstream, flags=re.M)
    staging_version = "v0." + version.removeprefix("v1.")
    lines = [
        "// Wrapper module: builds the Kubernetes control plane binaries for devcluster.",
        f"// Generated by devcluster.build.write_kubernetes_gomod from k8s.io/kubernetes {version}'s go.mod.",
        "module devcluster.local/kubernetes", "",
        go_line.group(0) if go_line else "go 1.26.0", "",
        *([godebug.group(0), ""] if godebug else []),
        f"require k8s.io/kubernetes {version}", "",
        "replace (", *[f"\t{m} => {m} {staging_version}" for m in staging], ")", "",
        "tool (", *[f"\tk8s.io/kubernetes/cmd/{c}" for c in KUBERNETES_COMMANDS], ")", "",
    ]
    (module_dir / "go.mod").write_text("\n".join(lines))
    subprocess.run(["go", "mod", "tidy"], cwd=module_dir, env=dict(_go_env(), GOFLAGS="-buildvcs=false"),
                   check=True)
