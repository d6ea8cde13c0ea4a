-- REAP: requests whose lease ran out (their worker died or hung) go back to the pending set
-- with their original score, or to the dead letters after max_attempts. A stream gets a reset
-- marker (K_RESET), so its readers learn at once that the attempt they watched was lost.
-- Also trims the histories and the dead letters to the retention window (so an idle queue is
-- trimmed too).
-- KEYS: running, pending, wake, dead, history, unsuccessful (best effort: not checked)
-- ARGV: base, default max_attempts, limit, retention_s
-- Returns {requeued ids..., REAP_CUT, dead ids...}. Validates first: a queue key of another
-- type is refused (MALFORMED) before any write; an expired id that is not a valid request id,
-- or whose record is gone or of another type, is dropped from `running` alone.
local bad = check_types(KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'list', KEYS[4], 'zset',
                        KEYS[5], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local retention = tonumber(ARGV[4])
if not retention or retention < 1 then return redis.error_reply(INVALID .. ' retention_s') end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued, dead = {}, {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local rk = ARGV[1] .. REQ .. id
  local f = {false}
  if valid_id(id) and not bad_type(rk, 'hash') then
    f = redis.call('HMGET', rk, 'status', 'attempts', 'score', 'stream', 'worker', 'max_attempts',
                   'created_ms')
  end
  if f[1] == RUNNING then
    local attempts = tonumber(f[2]) or 0
    local sk = ARGV[1] .. STREAM .. id
    local stream_ok = f[4] == '1' and not bad_type(sk, 'stream')
    local why = 'worker ' .. tostring(f[5]) .. ' stopped renewing its lease (attempt ' ..
                attempts .. ')'
    local max_attempts = tonumber(f[6]) or tonumber(ARGV[2])
    if attempts >= max_attempts or tonumber(f[3]) == nil then
      local err = 'dead-lettered after ' .. attempts .. ' attempt(s): ' .. why
      redis.call('HSET', rk, 'status', FAILED, 'error', err, 'finished_ms', now)
      redis.call('ZADD', KEYS[4], now, id)
      redis.pcall('ZADD', KEYS[6], tonumber(f[7]) or now, id)
      if stream_ok then
        redis.call('XADD', sk, '*', 'k', K_FAILED, 'd', err)
        redis.call('EXPIRE', sk, retention)
      elseif f[4] ~= '1' then
        local lk = ARGV[1] .. RES .. id
        if not bad_type(lk, 'list') then
          redis.call('LPUSH', lk, cjson.encode({status = FAILED, error = err}))
          redis.call('EXPIRE', lk, retention)
        end
      end
      redis.call('EXPIRE', rk, retention)
      dead[#dead + 1] = id
    else
      redis.call('HSET', rk, 'status', PENDING, 'error', why)
      redis.call('HDEL', rk, 'first_chunk_ms')
      redis.call('ZADD', KEYS[2], f[3], id)
      redis.call('LPUSH', KEYS[3], '1')
      if stream_ok then redis.call('XADD', sk, '*', 'k', K_RESET, 'd', why) end
      requeued[#requeued + 1] = id
    end
  end
end
local cutoff = '(' .. string.format('%d', now - retention * 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', cutoff)
redis.pcall('ZREMRANGEBYSCORE', KEYS[6], '-inf', cutoff)
requeued[#requeued + 1] = REAP_CUT
for _, id in ipairs(dead) do requeued[#requeued + 1] = id end
return requeued
