"""Settings for the test run: production settings, with a test-only secret."""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-never-used-in-production-3f9a")

from gateway.settings import *  # noqa: E402,F401,F403
