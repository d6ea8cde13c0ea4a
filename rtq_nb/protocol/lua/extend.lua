-- EXTEND: move the deadline of a pending or running request to now + extra_ms (the "wait
-- longer" recipe).
-- KEYS: record
-- ARGV: extra_ms
-- Returns the status ('' when there is no record).
local st = redis.call('HGET', KEYS[1], 'status')
if st == false then return '' end
if st == PENDING or st == RUNNING then
  redis.call('HSET', KEYS[1], 'deadline_ms', now + tonumber(ARGV[1]))
end
return st
