-- POP: take up to N requests, highest score first, and lease each to this worker.
-- KEYS: pending, running, wake, unsuccessful (an expired request is listed there)
-- ARGV: base, worker_id, lease_ms, max_count, wake tokens already consumed, retention_s,
--       [floor: the lowest score to take ('' or absent: any; a sharded queue's global order)]
-- Returns a flat list: for each popped id, {id, kind, payload} where kind is
--   POP_RUN  payload = {attempt, JOB_FIELDS values...} (now leased to this worker, running)
--   POP_GONE payload = '' (no record: its TTL ran out)
--   POP_SKIP payload = the status it had (expired now, or cancelled/terminal before)
--   POP_BAD  payload = why it was dropped (an invalid id, or a record key of another type):
--            it fails alone, its neighbours are served
-- followed by one last element: how many requests are still pending.
-- A popped request's keys are built from ARGV[1] (the queue's hash-tagged base), so they
-- share the slot of the declared keys (Redis Cluster serves them). Validates before writing:
-- `running` (written after the records) by its type; `pending` by the pop itself, the first
-- write, which writes nothing when refused; each record by reading it; the wake list's trim
-- is best effort.
local bad = bad_type(KEYS[2], 'zset')
if bad then return redis.error_reply(MALFORMED .. ' ' .. bad) end
local floor = ARGV[7]
if floor == '' then floor = nil end
if floor and not tonumber(floor) then
  return redis.error_reply(INVALID .. ' floor ' .. tostring(floor))
end
local popped
if floor then
  popped = redis.pcall('ZREVRANGEBYSCORE', KEYS[1], '+inf', floor, 'WITHSCORES', 'LIMIT', 0,
                       tonumber(ARGV[4]))
  if not popped['err'] then
    for i = 1, #popped, 2 do redis.call('ZREM', KEYS[1], popped[i]) end
  end
else
  popped = redis.pcall('ZPOPMAX', KEYS[1], tonumber(ARGV[4]))
end
if popped['err'] then
  return redis.error_reply(MALFORMED .. ' ' .. KEYS[1] .. ' is not a zset: ' .. popped['err'])
end
local out = {}
local n = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  n = n + 1
  local rk = ARGV[1] .. REQ .. id
  local why = false
  local st = false
  if not valid_id(id) then
    why = 'invalid request id (not 1-128 of A-Z a-z 0-9 _ . : -)'
  else
    st = redis.pcall('HMGET', rk, 'status', 'deadline_ms', 'attempts', unpack(JOB_FIELDS))
    if st['err'] then why = rk .. ' is not a hash: ' .. st['err'] end
  end
  if why then
    out[#out + 1] = id; out[#out + 1] = POP_BAD; out[#out + 1] = why
  elseif st[1] == false then
    out[#out + 1] = id; out[#out + 1] = POP_GONE; out[#out + 1] = ''
  elseif st[1] ~= PENDING then
    out[#out + 1] = id; out[#out + 1] = POP_SKIP; out[#out + 1] = tostring(st[1])
  else
    local deadline = tonumber(st[2]) or 0
    if deadline > 0 and now >= deadline then
      redis.call('HSET', rk, 'status', EXPIRED, 'finished_ms', now,
                 'error', EXPIRED_WHY .. '; never started')
      redis.pcall('ZADD', KEYS[4], tonumber(st[11]) or now, id)  -- st[11]: created_ms
      if st[10] == '1' then
        local sk = ARGV[1] .. STREAM .. id
        if not bad_type(sk, 'stream') then
          redis.call('XADD', sk, '*', 'k', K_EXPIRED, 'd', EXPIRED_WHY)
          redis.call('EXPIRE', sk, tonumber(ARGV[6]))
        end
      else
        local lk = ARGV[1] .. RES .. id
        if not bad_type(lk, 'list') then
          redis.call('LPUSH', lk, EXPIRED_ENVELOPE)
          redis.call('EXPIRE', lk, tonumber(ARGV[6]))
        end
      end
      out[#out + 1] = id; out[#out + 1] = POP_SKIP; out[#out + 1] = EXPIRED
    else
      local attempt = tostring((tonumber(st[3]) or 0) + 1)
      redis.call('HSET', rk, 'status', RUNNING, 'worker', ARGV[2], 'started_ms', now,
                 'attempts', attempt)
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
      local job = {attempt}
      for j = 4, #st do
        if st[j] == false then job[#job + 1] = '' else job[#job + 1] = st[j] end
      end
      out[#out + 1] = id; out[#out + 1] = POP_RUN; out[#out + 1] = job
    end
  end
end
local extra = n - tonumber(ARGV[5])
if extra > 0 then redis.pcall('LTRIM', KEYS[3], extra, -1) end
out[#out + 1] = redis.call('ZCARD', KEYS[1])
return out
