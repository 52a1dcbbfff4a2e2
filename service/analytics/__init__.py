"""Journey analytics: stage transitions counted at ingest, hourly and daily rollups, and their read side."""
