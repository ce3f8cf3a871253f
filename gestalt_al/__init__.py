"""gestalt-al core."""
