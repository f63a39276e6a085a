"""``python -m bench``: see bench/_main.py and docs/benchmarks.md."""

import sys

from bench._main import main

sys.exit(main())
