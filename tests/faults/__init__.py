"""The fault-injection suite (issue 9): real voicehooks processes, a real PostgreSQL cut off by
a proxy or really restarted, processes killed with SIGKILL, a receiver that fails; each test
asserts what a user would notice. Its tools are in `harness.py` (bench/soak.py uses them too)."""
