"""``python -m mammoth.summary DIR [DIR ...]``: the sweep-summary command (:mod:`mammoth.app.summary_command`)."""

import sys

from mammoth.app.summary_command import main

if __name__ == "__main__":
    sys.exit(main())
