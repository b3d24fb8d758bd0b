"""``python -m edgevit``: the same as the ``edgevit`` command."""

from __future__ import annotations

import sys

from edgevit.cli import main

if __name__ == "__main__":
    sys.exit(main())
