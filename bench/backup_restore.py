#!/usr/bin/env python3
"""The former 600 MB benchmark, kept as a command: volsafe vs the Docker-docs recipe on the mixed set.

    python3 bench/backup_restore.py [--size-mb 600] [--rounds 3]

Now a thin wrapper around the suite (bench/run.py, see bench/README.md):

    python3 bench/run.py --datasets mixed --contenders volsafe,tar,tgz --no-chart [options]

Every other option of run.py is accepted and passed through.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--datasets", "mixed", "--contenders", "volsafe,tar,tgz", "--no-chart", *sys.argv[1:]]))
