"""Test servers shared by the test suite, the torture tests and scripts/uat.

``faulty`` (``from tests.servers.faulty import FaultyServer, Faults``) is a real threaded HTTP/1.1 server on
127.0.0.1 that serves generated content with switchable faults; ``python -m tests.servers.faulty --help``.
"""
