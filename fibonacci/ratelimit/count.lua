-- Count one request in each budget given: INCR KEYS[i], and when that INCR
-- created the key, EXPIRE it after ARGV[i] seconds. Returns the counts.
--
-- The one definition of a count, run by Redis for both counters of the
-- service: the app's (fibonacci/ratelimit/redis_counters.py, through
-- redis-py) and the edge's (deploy/edge/fib_edge.lua, through nginx).
local counts = {}
for i, key in ipairs(KEYS) do
    local count = redis.call('INCR', key)
    if count == 1 then
        redis.call('EXPIRE', key, ARGV[i])
    end
    counts[i] = count
end
return counts
