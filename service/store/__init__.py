"""Live visitor state: a small async interface with a Redis implementation and an embedded twin."""
