import importlib

# Same migration as release 2's; only the set of files differs between releases.
Migration = importlib.import_module("blog.migrations.0002_populate_categories").Migration
