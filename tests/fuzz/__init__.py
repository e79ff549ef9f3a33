"""Fuzz harnesses for the parsers and the scanner (hypothesis in CI, a million inputs slow).

``harness.py`` holds one ``check_*`` function per target (the invariants) and one ``gen_*``
generator per target (seeded ``random.Random``: fast, reproducible from the seed).  The normal
suite drives them with hypothesis; ``test_fuzz_million.py`` (``-m slow``) runs 1,000,000
generated inputs across them in worker processes.
"""
