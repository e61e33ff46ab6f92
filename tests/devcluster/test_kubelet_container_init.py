"""container_init's mounts, for real, in a mount namespace of their own (root and `unshare` needed, as devcluster).

The case that broke the chart's end-to-end test when the repository was cloned under /tmp: the operator's pod
mounts an emptyDir at /tmp (its root file system is read-only), which hid the repository, the image's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="mounts need root and unshare, as devcluster itself")

PROBE = """
import json, os, sys
from devcluster.kubelet.container_init import mount_volumes
spec = json.loads(sys.argv[1])
mount_volumes(spec["mounts"], spec["imageDirs"])
print(json.dumps({path: os.path.exists(path) for path in spec["look"]}))
"""


def in_own_mount_namespace(mounts: list[dict[str, str]], image_dirs: list[str], look: list[Path]) -> dict[str, bool]:
    spec = {"mounts": mounts, "imageDirs": image_dirs, "look": [str(p) for p in look]}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", PROBE,
                             json.dumps(spec)], capture_output=True, text=True, env={"PYTHONPATH": str(REPO)},
                            check=False)
    assert result.returncode == 0, result.stderr
    answer: dict[str, bool] = json.loads(result.stdout)
    return answer


def test_a_volume_over_an_ancestor_of_the_image_hides_the_rest_but_not_the_image(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"  # stands for /tmp
    image = scratch / "clone" / "repo"  # a repository cloned under it: the image's working folder
    (image / ".venv" / "bin").mkdir(parents=True)
    (image / ".venv" / "bin" / "python").write_text("")
    (scratch / "other-file").write_text("not the image's")
    empty_dir = tmp_path / "empty-dir-volume"
    empty_dir.mkdir()

    seen = in_own_mount_namespace(
        [{"source": str(empty_dir), "target": str(scratch)}], [str(image), str(image / ".venv" / "bin")],
        [image / ".venv" / "bin" / "python", scratch / "other-file"])

    assert seen == {str(image / ".venv" / "bin" / "python"): True, str(scratch / "other-file"): False}
    assert (empty_dir / "clone" / "repo").is_dir(), "the image's folder is bound inside the volume, as a mount point"
    assert not (empty_dir / "clone" / "repo" / ".venv").exists(), "nothing of the image is copied into the volume"


def test_image_folders_no_volume_covers_are_left_alone(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "app.py").write_text("")
    volume, target = tmp_path / "volume", tmp_path / "data"
    volume.mkdir()
    (volume / "payload").write_text("x")

    seen = in_own_mount_namespace([{"source": str(volume), "target": str(target)}], [str(image)],
                                  [image / "app.py", target / "payload"])

    assert all(seen.values()), seen
    assert sorted(p.name for p in volume.iterdir()) == ["payload"]
