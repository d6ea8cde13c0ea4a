-- HANDBACK: a stopping worker returns a request: pending again with its score, and the
-- attempt it used is not counted (the budget grows). Only while the lease is this worker's.
-- KEYS: record, running, pending, wake, stream
-- ARGV: worker_id, attempt, id
-- Returns 1, or 0 when the lease is not this worker's.
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'score', 'stream')
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] or not cur[4] then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'max_attempts', 1)  -- this attempt does not count
redis.call('HSET', KEYS[1], 'status', PENDING,
           'error', 'handed back by stopping worker ' .. ARGV[1])
redis.call('HDEL', KEYS[1], 'first_chunk_ms')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], cur[4], ARGV[3])
redis.call('LPUSH', KEYS[4], '1')
if cur[5] == '1' then
  redis.call('XADD', KEYS[5], '*', 'k', K_RESET, 'd', 'worker ' .. ARGV[1] .. ' stopped; handed back')
end
return 1
