"""Every test server of the suite, shared by the tests, the torture tests and scripts/uat.

``faulty`` (``from tests.servers.faulty import FaultyServer, Faults``) is a real threaded HTTP/1.1 server on
127.0.0.1 that serves generated content with switchable faults; ``python -m tests.servers.faulty --help``.
``chaos`` adds random faults (torture).  ``raw`` is a raw-socket server for bytes ``http.server`` cannot send
(malformed HTTP, TLS, IPv6).  ``signed`` is a signed-URL CDN built on ``faulty`` plus its redirector.
``lookalike`` holds the Hugging Face Hub (+ CDN) and CivitAI (+ storage) look-alikes
(``python -m tests.servers.lookalike.hub``).
"""
