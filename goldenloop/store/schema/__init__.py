"""Schema migrations, one module per feature (see goldenloop.store.migrations)."""
