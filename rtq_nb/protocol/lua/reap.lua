-- REAP: requests whose lease ran out (their worker died or hung) go back to the pending set
-- with their original score, or to the dead letters after max_attempts. A stream gets a reset
-- marker (K_RESET), so its readers learn at once that the attempt they watched was lost.
-- KEYS: running, pending, wake, dead
-- ARGV: base, default max_attempts, limit, retention_s
-- Returns {requeued ids..., REAP_CUT, dead ids...}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued, dead = {}, {}
local retention = tonumber(ARGV[4])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local rk = ARGV[1] .. REQ .. id
  local f = redis.call('HMGET', rk, 'status', 'attempts', 'score', 'stream', 'worker',
                       'max_attempts')
  if f[1] == RUNNING then
    local attempts = tonumber(f[2]) or 0
    local sk = ARGV[1] .. STREAM .. id
    local why = 'worker ' .. tostring(f[5]) .. ' stopped renewing its lease (attempt ' ..
                attempts .. ')'
    local max_attempts = tonumber(f[6]) or tonumber(ARGV[2])
    if attempts >= max_attempts or tonumber(f[3]) == nil then
      local err = 'dead-lettered after ' .. attempts .. ' attempt(s): ' .. why
      redis.call('HSET', rk, 'status', FAILED, 'error', err, 'finished_ms', now)
      redis.call('ZADD', KEYS[4], now, id)
      if f[4] == '1' then
        redis.call('XADD', sk, '*', 'k', K_FAILED, 'd', err)
        redis.call('EXPIRE', sk, retention)
      else
        local lk = ARGV[1] .. RES .. id
        redis.call('LPUSH', lk, cjson.encode({status = FAILED, error = err}))
        redis.call('EXPIRE', lk, retention)
      end
      redis.call('EXPIRE', rk, retention)
      dead[#dead + 1] = id
    else
      redis.call('HSET', rk, 'status', PENDING, 'error', why)
      redis.call('HDEL', rk, 'first_chunk_ms')
      redis.call('ZADD', KEYS[2], f[3], id)
      redis.call('LPUSH', KEYS[3], '1')
      if f[4] == '1' then redis.call('XADD', sk, '*', 'k', K_RESET, 'd', why) end
      requeued[#requeued + 1] = id
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', now - retention * 1000))
requeued[#requeued + 1] = REAP_CUT
for _, id in ipairs(dead) do requeued[#requeued + 1] = id end
return requeued
