"""Measurements of the operator on devcluster (SPEC §7); see bench/README.md."""
