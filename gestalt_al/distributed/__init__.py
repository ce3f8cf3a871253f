"""Ray Train wrappers of the core training loops. Importing this package imports Ray; the
rest of ``gestalt_al`` never does."""
