"""``python -m mammoth.summary DIR [DIR ...]``: the sweep-summary command (:mod:`mammoth.reporting.summary`)."""

import sys

from mammoth.reporting.summary import main

if __name__ == "__main__":
    sys.exit(main())
