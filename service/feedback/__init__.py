"""Feedback: recommendation ids, the served-list log, impressions, attribution and the feedback counters."""
