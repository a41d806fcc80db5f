"""The benchmark's settings with the demo's logging: the security log has a handler, as in a deployment."""

from bench.settings import *  # noqa: F403
from demo.settings import LOGGING  # noqa: F401
