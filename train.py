"""Train a vizoo model from the command line: `python train.py --help`."""

import sys

from vizoo.cli import main  # importing vizoo quiets TensorFlow's C++ start-up messages (TF_CPP_MIN_LOG_LEVEL=2)

if __name__ == "__main__":
    sys.exit(main())
