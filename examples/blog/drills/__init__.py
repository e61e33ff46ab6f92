"""Failure drills for the operator's tests: one Django app per drill, enabled through BLOG_DRILLS.

Each app's label is drill_<name>; its migrations depend on blog 0002 (or later) so that the
migration plan is deterministic.
"""
