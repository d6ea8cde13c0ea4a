-- SUBMIT: store a request's record, enqueue it, wake one idle worker.
-- KEYS: record, pending, wake, seq, history
-- ARGV: id, priority, timeout_ms, retention_s, wake_cap, then field, value, ... (the record)
-- Returns {now, score}. Validates everything first and writes nothing when it refuses: a
-- duplicate id (DUPLICATE: the record exists), a key of the wrong type or a counter that is
-- not an integer (MALFORMED), an argument out of range (INVALID).
local bad = bad_type(KEYS[2], 'zset') or bad_type(KEYS[3], 'list') or bad_type(KEYS[5], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local record = redis.call('TYPE', KEYS[1])['ok']
if record == 'hash' then
  return redis.error_reply(DUPLICATE .. ' request id already exists: ' .. ARGV[1])
elseif record ~= 'none' then
  return redis.error_reply(MALFORMED .. ' ' .. KEYS[1] .. ' is not a hash')
end
local priority = tonumber(ARGV[2])
local timeout_ms = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local wake_cap = tonumber(ARGV[5])
if not priority or priority ~= math.floor(priority) or priority < PRIORITY_MIN
   or priority > PRIORITY_MAX then
  return redis.error_reply(INVALID .. ' priority ' .. tostring(ARGV[2]))
end
if not timeout_ms or timeout_ms < 0 or timeout_ms > MAX_TIMEOUT_MS then
  return redis.error_reply(INVALID .. ' timeout_ms ' .. tostring(ARGV[3]))
end
if not retention or retention < 1 or retention > MAX_RETENTION_S or not wake_cap
   or wake_cap < 1 then
  return redis.error_reply(INVALID .. ' retention_s or wake_cap')
end
if (#ARGV - 5) % 2 ~= 0 then return redis.error_reply(INVALID .. ' odd field list') end
-- The one write that can still be refused comes first, and writes nothing when it is: the
-- arrival counter (a string holding an integer below 2^40; Redis's OOM is passed on).
local seq = redis.pcall('INCR', KEYS[4])
if type(seq) == 'table' and string.find(tostring(seq['err']), 'OOM', 1, true) then return seq end
if type(seq) ~= 'number' or seq >= SEQ_SPAN then
  return redis.error_reply(MALFORMED .. ' ' .. KEYS[4] .. ' is not an arrival count below 2^40')
end
-- the rest cannot be refused (every key's type was checked)
local score = string.format('%d', priority * SEQ_SPAN - seq)
local deadline = 0
if timeout_ms > 0 then deadline = now + timeout_ms end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', PENDING, 'created_ms', now,
           'deadline_ms', deadline, 'score', score, 'attempts', 0, 'priority', ARGV[2],
           'timeout_ms', ARGV[3], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], retention + math.ceil(timeout_ms / 1000))
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('ZADD', KEYS[5], now, ARGV[1])
if seq % 1024 == 0 then
  redis.call('LTRIM', KEYS[3], 0, wake_cap - 1)
  local cutoff = string.format('%d', now - retention * 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. cutoff)
end
return {now, score}
