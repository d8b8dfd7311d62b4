"""The benchmark harness and the demo: they start real clusters and sources on 127.0.0.1."""
