-- SUBMIT: store a request's record, enqueue it, wake one idle worker.
-- KEYS: record, pending, wake, seq, history
-- ARGV: id, priority, timeout_ms, retention_s, wake_cap, then field, value, ... (the record)
-- Returns {now, score}; a duplicate id is refused (DUPLICATE error) without touching it.
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 0 then
  return redis.error_reply(DUPLICATE .. ' request id already exists: ' .. ARGV[1])
end
local seq = redis.call('INCR', KEYS[4])
local score = string.format('%d', tonumber(ARGV[2]) * SEQ_SPAN - seq)
local timeout_ms = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local deadline = 0
if timeout_ms > 0 then deadline = now + timeout_ms end
redis.call('HSET', KEYS[1], 'status', PENDING, 'created_ms', now, 'deadline_ms', deadline,
           'score', score, 'attempts', 0, 'priority', ARGV[2], 'timeout_ms', ARGV[3],
           unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], retention + math.ceil(timeout_ms / 1000))
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('ZADD', KEYS[5], now, ARGV[1])
if seq % 1024 == 0 then
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
  local cutoff = string.format('%d', now - retention * 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. cutoff)
end
return {now, score}
