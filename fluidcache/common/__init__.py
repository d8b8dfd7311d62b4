"""Pieces every process shares: wire messages, errors, block ids, config, auth, HTTP helpers."""
