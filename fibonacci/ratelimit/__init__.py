"""Per-client rate limits: who the client is, what a request spends, the Redis counters.

Modules: `identity` (the client address), `rates` (the one rate reader),
`budgets` (spending, the "large" rule, outages), `headers` (the RateLimit
fields), `mixins` (attaching it all to a DRF view), `redis_counters` (the
cache backend that counts in one round trip). Nothing is imported here, so
that settings can use `rates` before Django is set up.
"""
