"""The tests, one package per product: operator, devcluster, demo, packaging (chart, CRD, image, docs) and e2e.

Packages, so that pytest and mypy both name each module by its path (tests.e2e.conftest, tests.operator.test_jobs).
"""
