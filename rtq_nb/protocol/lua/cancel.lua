-- CANCEL: a pending request leaves the queue; a running one is marked so that its worker
-- stops at its next write. Its readers get a cancelled envelope or stream marker.
-- KEYS: record, pending, running, result list, stream, unsuccessful
-- ARGV: request_id, reason, retention_s
-- Returns the status the request had ('' when there is no record). Validates first: a record
-- or queue key of another type is refused (MALFORMED) and nothing is written; an output key
-- (result list or stream) of another type is left alone, and the record still says cancelled
-- (so is an unsuccessful history of another type: the cancel is not listed there).
local bad = check_types(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local retention = tonumber(ARGV[3])
if not retention or retention < 1 then return redis.error_reply(INVALID .. ' retention_s') end
local st = redis.call('HMGET', KEYS[1], 'status', 'stream', 'created_ms')
if st[1] == false then return '' end
if st[1] ~= PENDING and st[1] ~= RUNNING then return st[1] end
-- writes
redis.call('HSET', KEYS[1], 'status', CANCELLED, 'finished_ms', now, 'error', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], retention)
redis.pcall('ZADD', KEYS[6], tonumber(st[3]) or now, ARGV[1])
redis.pcall('ZREMRANGEBYSCORE', KEYS[6], '-inf', string.format('(%d', now - retention * 1000))
if st[2] == '1' then
  if not bad_type(KEYS[5], 'stream') then
    redis.call('XADD', KEYS[5], '*', 'k', K_CANCELLED, 'd', ARGV[2])
    redis.call('EXPIRE', KEYS[5], retention)
  end
elseif not bad_type(KEYS[4], 'list') then
  redis.call('LPUSH', KEYS[4], cjson.encode({status = CANCELLED, error = ARGV[2]}))
  redis.call('EXPIRE', KEYS[4], retention)
end
return st[1]
