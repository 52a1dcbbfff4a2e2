"""Live visitor state and the merchandising rules: small async interfaces, each with a Redis
implementation and an embedded twin (``base``/``memory_store``/``redis_store``; ``rules_*``)."""
