-- REQUEUE: a dead letter goes back to the queue with a fresh budget of attempts. Its stale
-- failure envelope / stream are deleted; attempt numbers keep counting up (lease tokens are
-- never reused).
-- KEYS: record, dead, pending, wake, result list, stream
-- ARGV: id
-- Returns 1, or 0 when it is not in `dead`.
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'score', 'attempts', 'max_attempts')
if not f[1] then return 0 end
local budget = (tonumber(f[2]) or 0) + (tonumber(f[3]) or DEFAULT_MAX_ATTEMPTS)
redis.call('HSET', KEYS[1], 'status', PENDING, 'max_attempts', budget, 'error', '')
redis.call('HDEL', KEYS[1], 'finished_ms', 'first_chunk_ms')
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('ZADD', KEYS[3], f[1], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
return 1
