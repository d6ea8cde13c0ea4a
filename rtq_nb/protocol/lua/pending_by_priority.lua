-- PENDING_BY_PRIORITY: pending counts per priority, highest first, one ZCOUNT per distinct
-- priority (O(P log N)), never a scan of the whole set. Reads only.
-- KEYS: pending
-- Returns {priority, count, priority, count, ...}; a pending key of another type is refused
-- (MALFORMED).
local bad = bad_type(KEYS[1], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local out = {}
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
while #top > 0 do
  local p = math.floor(tonumber(top[2]) / SEQ_SPAN) + 1
  local lo = string.format('%d', p * SEQ_SPAN - (SEQ_SPAN - 1))
  local hi = string.format('%d', p * SEQ_SPAN - 1)
  out[#out + 1] = p
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], lo, hi)
  top = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. lo, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
return out
