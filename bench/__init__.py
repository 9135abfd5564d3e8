"""Benchmarks of redis-scim against its targets and its peers (`make bench`, docs/performance.md).

Each scenario is a module run in its own interpreter (`python -m bench.<scenario>`) that prints one
JSON object as the last thing on stdout; `python -m bench` runs them all and writes bench/results.json.
"""
