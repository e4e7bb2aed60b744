"""`python -m tsm.train ...` (and so `accelerate launch -m tsm.train ...`) is `tsm train ...`."""

import sys

from tsm.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
