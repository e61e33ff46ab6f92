import importlib

# Same migration as release 2's; release 3 adds 0006-0008 after it.
Migration = importlib.import_module("blog.migrations.0002_populate_categories").Migration
