"""Train a vizoo model from the command line: `python train.py --help`."""

import sys

from vizoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
