"""`python -m minifreeze`: the command line, which lives in the lab (`minifreeze/lab/cli.py`)."""

import sys

from minifreeze.lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
