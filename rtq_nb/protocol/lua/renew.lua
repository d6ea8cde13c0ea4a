-- RENEW: extend the leases this worker still holds.
-- KEYS: running
-- ARGV: base, lease_ms, worker_id, then pairs (id, attempt)
-- Returns one code per pair: LEASE_OK renewed, LEASE_LOST (reaped and taken over: stop
-- working on it), LEASE_CANCELLED (stop generating).
local out = {}
for i = 4, #ARGV, 2 do
  local cur = redis.call('HMGET', ARGV[1] .. REQ .. ARGV[i], 'status', 'worker', 'attempts')
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
