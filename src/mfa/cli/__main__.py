"""``python -m mfa.cli``."""

import sys

from mfa.cli import app

sys.exit(app())
