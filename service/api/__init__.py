"""HTTP controllers of the journeyrec service (all under ``/v1`` except health and metrics)."""
