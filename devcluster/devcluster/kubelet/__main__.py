"""`python -m devcluster.kubelet --config PATH`: the process kubelet of devcluster."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType

from devcluster.kubelet.config import load_config
from devcluster.kubelet.kubelet import Kubelet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.kubelet", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the JSON file `devcluster up` writes")
    parser.add_argument("--verbose", action="store_true", help="also log debug lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    kubelet = Kubelet(load_config(args.config))

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("devcluster.kubelet").info("received %s: stopping", signal.Signals(signum).name)
        kubelet.stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    kubelet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
