"""The locustfiles: ``locust -f load`` loads every ``.py`` file here (Locust skips names starting with ``_``).

The code lives in ``harness/load/``; these files only name the users (see README.md, "Load").
"""

from harness.load.nightly import nightly_profile  # zora-harness nightly's short profile (imports no Locust)

__all__ = ["nightly_profile"]
