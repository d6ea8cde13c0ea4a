-- HANDBACK: a stopping worker returns a request: pending again with its score, and the
-- attempt it used is not counted (the budget grows). Only while the lease is this worker's.
-- KEYS: record, running, pending, wake, stream
-- ARGV: worker_id, attempt, id
-- Returns 1, or 0 when the lease is not this worker's. Validates first: a key of another
-- type is refused (MALFORMED) and nothing is written.
local bad = check_types(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'list')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'score', 'stream',
                      'max_attempts')
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] or not tonumber(cur[4])
   or (cur[6] and not tonumber(cur[6])) then
  return 0
end
local stream_ok = cur[5] == '1' and not bad_type(KEYS[5], 'stream')
-- writes
redis.call('HINCRBY', KEYS[1], 'max_attempts', 1)  -- this attempt does not count
redis.call('HSET', KEYS[1], 'status', PENDING,
           'error', 'handed back by stopping worker ' .. ARGV[1])
redis.call('HDEL', KEYS[1], 'first_chunk_ms')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], cur[4], ARGV[3])
redis.call('LPUSH', KEYS[4], '1')
if stream_ok then
  redis.call('XADD', KEYS[5], '*', 'k', K_RESET, 'd', 'worker ' .. ARGV[1] .. ' stopped; handed back')
end
return 1
