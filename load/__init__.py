"""The locustfiles: ``locust -f load`` loads every ``.py`` file here (Locust skips names starting with ``_``).

The code lives in ``harness/load/``; these files only name the users (see README.md, "Load").
"""
