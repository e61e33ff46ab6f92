"""Migrations as release 1 shipped them: only 0001-0002, before the status change.

Selected by settings.MIGRATION_MODULES when BLOG_RELEASE=1. The modules re-export the Migration
classes of blog/migrations, so both releases record the very same (app, name) rows.
"""
