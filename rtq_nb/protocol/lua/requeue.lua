-- REQUEUE: a dead letter goes back to the queue with a fresh budget of attempts. Its stale
-- failure envelope / stream are deleted; attempt numbers keep counting up (lease tokens are
-- never reused).
-- KEYS: record, dead, pending, wake, result list, stream
-- ARGV: id
-- Returns 1, or 0 when it is not a dead letter with a record. Validates first: a key of
-- another type is refused (MALFORMED) and nothing is written.
local bad = check_types(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'list')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local f = redis.call('HMGET', KEYS[1], 'score', 'attempts', 'max_attempts')
if not f[1] or not tonumber(f[1]) then return 0 end
-- writes
redis.call('ZREM', KEYS[2], ARGV[1])
local budget = (tonumber(f[2]) or 0) + (tonumber(f[3]) or DEFAULT_MAX_ATTEMPTS)
redis.call('HSET', KEYS[1], 'status', PENDING, 'max_attempts', budget, 'error', '')
redis.call('HDEL', KEYS[1], 'finished_ms', 'first_chunk_ms')
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('ZADD', KEYS[3], f[1], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
return 1
