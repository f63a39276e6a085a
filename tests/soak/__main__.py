"""``python -m tests.soak``: the kill -9 soak (``make soak``)."""

import sys

from tests.soak.harness import main

sys.exit(main())
