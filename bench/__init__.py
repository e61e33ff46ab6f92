"""Measurements of the operator on devcluster against the same work done alone; see bench/README.md."""
