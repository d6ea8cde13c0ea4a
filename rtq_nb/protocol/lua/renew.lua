-- RENEW: extend the leases this worker still holds.
-- KEYS: running
-- ARGV: base, lease_ms, worker_id, then pairs (id, attempt)
-- Returns one code per pair: LEASE_OK renewed, LEASE_LOST (reaped and taken over, or its
-- record is gone or of another type: stop working on it), LEASE_CANCELLED (stop generating).
-- Validates first: a running key of another type is refused (MALFORMED).
local bad = bad_type(KEYS[1], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local out = {}
for i = 4, #ARGV, 2 do
  local rk = ARGV[1] .. REQ .. ARGV[i]
  local cur = redis.pcall('HMGET', rk, 'status', 'worker', 'attempts')
  if cur['err'] then cur = {false} end
  if cur[1] == RUNNING and cur[2] == ARGV[3] and cur[3] == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[i])
    out[#out + 1] = LEASE_OK
  elseif cur[1] == CANCELLED then
    out[#out + 1] = LEASE_CANCELLED
  else
    out[#out + 1] = LEASE_LOST
  end
end
return out
