-- EXTEND: move the deadline of a pending or running request to now + extra_ms (the "wait
-- longer" recipe).
-- KEYS: record
-- ARGV: extra_ms
-- Returns the status ('' when there is no record). Validates first (MALFORMED, INVALID).
local bad = bad_type(KEYS[1], 'hash')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local extra = tonumber(ARGV[1])
if not extra or extra < 0 or extra > MAX_TIMEOUT_MS then
  return redis.error_reply(INVALID .. ' extra_ms ' .. tostring(ARGV[1]))
end
local st = redis.call('HGET', KEYS[1], 'status')
if st == false then return '' end
if st == PENDING or st == RUNNING then
  redis.call('HSET', KEYS[1], 'deadline_ms', now + extra)
end
return st
