"""Lua scripts, one named constant each. Loaded once per connection (SCRIPT LOAD) and run with
EVALSHA; a NOSCRIPT reply (e.g. after a Redis restart) reloads them (see ``_redis.Conn``).

Conventions: times come from the Redis server clock (``TIME``) so clients and workers never
compare their own clocks; times are integer milliseconds since the epoch; scores are formatted
with ``%d`` to stay exact. Keys of the queue and of a request are passed in ``KEYS[]``. The one
exception is POP: the record of a popped request is named only once its id is popped, so POP
builds it from ``ARGV[1]`` (the queue's hash-tagged base). It shares the queue's hash tag and
therefore the slot of the declared keys, which Redis Cluster serves (documented in the README).
Malformed data never makes a script raise: ``tonumber(x) or 0`` everywhere.
"""

from __future__ import annotations

_NOW = """
local _t = redis.call('TIME')
local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)
"""

# KEYS: record, pending, wake, seq, history
# ARGV: id, priority, timeout_ms, retention_s, wake_cap, field, value, ...
# 8 commands: the client registry is refreshed separately (at most every few seconds).
SUBMIT = (
    _NOW
    + """
if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 0 then
  return redis.error_reply('RTQ_DUPLICATE request id already exists: ' .. ARGV[1])
end
local seq = redis.call('INCR', KEYS[4])
local score = string.format('%d', tonumber(ARGV[2]) * 1099511627776 - seq)
local timeout_ms = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local deadline = 0
if timeout_ms > 0 then deadline = now + timeout_ms end
redis.call('HSET', KEYS[1], 'status', 'pending', 'created_ms', now, 'deadline_ms', deadline,
           'score', score, 'attempts', 0, 'priority', ARGV[2], 'timeout_ms', ARGV[3],
           unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], retention + math.ceil(timeout_ms / 1000))
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('LPUSH', KEYS[3], '1')
redis.call('ZADD', KEYS[5], now, ARGV[1])
if seq % 1024 == 0 then
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
  local cutoff = string.format('%d', now - retention * 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', '(' .. cutoff)
end
return {now, score}
"""
)

# Fields POP returns for each request it leases, in this order (see _models.parse_job).
JOB_FIELDS = (
    "v",
    "id",
    "queue",
    "priority",
    "input",
    "params",
    "stream",
    "created_ms",
    "deadline_ms",
)

# KEYS: pending, running, wake
# ARGV: base, worker_id, lease_ms, max_count, tokens_already_consumed, retention_s
# Returns a flat list: for each popped id, {id, kind, payload} where kind is
#   'run'  payload = {attempt, JOB_FIELDS values...} (now leased to this worker, running)
#   'gone' payload = '' (no record: TTL ran out or garbage id)
#   'skip' payload = the status it had (expired now, or cancelled/terminal before)
# followed by one last element: how many requests are still pending (the worker skips its
# pipelined pop of the next request when none are).
POP = (
    _NOW
    + """
local popped = redis.call('ZPOPMAX', KEYS[1], tonumber(ARGV[4]))
local out = {}
local n = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local rk = ARGV[1] .. ':req:' .. id
  local st = redis.call('HMGET', rk, 'status', 'deadline_ms', 'attempts', """
    + ", ".join(f"'{f}'" for f in JOB_FIELDS)
    + """)
  n = n + 1
  if st[1] == false then
    out[#out + 1] = id; out[#out + 1] = 'gone'; out[#out + 1] = ''
  elseif st[1] ~= 'pending' then
    out[#out + 1] = id; out[#out + 1] = 'skip'; out[#out + 1] = tostring(st[1])
  else
    local deadline = tonumber(st[2]) or 0
    if deadline > 0 and now >= deadline then
      redis.call('HSET', rk, 'status', 'expired', 'finished_ms', now,
                 'error', 'deadline passed while pending; never started')
      local sk = ARGV[1] .. ':stream:' .. id
      local lk = ARGV[1] .. ':res:' .. id
      if st[10] == '1' then
        redis.call('XADD', sk, '*', 'k', 'x', 'd', 'deadline passed while pending')
        redis.call('EXPIRE', sk, tonumber(ARGV[6]))
      else
        redis.call('LPUSH', lk, '{"status":"expired","error":"deadline passed while pending"}')
        redis.call('EXPIRE', lk, tonumber(ARGV[6]))
      end
      out[#out + 1] = id; out[#out + 1] = 'skip'; out[#out + 1] = 'expired'
    else
      local attempt = tostring((tonumber(st[3]) or 0) + 1)
      redis.call('HSET', rk, 'status', 'running', 'worker', ARGV[2], 'started_ms', now,
                 'attempts', attempt)
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
      local job = {attempt}
      for j = 4, #st do
        if st[j] == false then job[#job + 1] = '' else job[#job + 1] = st[j] end
      end
      out[#out + 1] = id; out[#out + 1] = 'run'; out[#out + 1] = job
    end
  end
end
local extra = n - tonumber(ARGV[5])
if extra > 0 then redis.call('LTRIM', KEYS[3], extra, -1) end
out[#out + 1] = redis.call('ZCARD', KEYS[1])
return out
"""
)

_LEASE_CHECK = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == 'cancelled' then return -1 end
  return 0
end
"""

# KEYS: record, stream
# ARGV: worker_id, attempt, retention_s, first ('1' on the first flush), then triples
#       (seq, count, text)
# Returns 1 (appended), 0 (lease lost: discarded), -1 (cancelled: stop generating)
APPEND = (
    _NOW
    + _LEASE_CHECK
    + """
for i = 5, #ARGV, 3 do
  redis.call('XADD', KEYS[2], '*', 'k', 'd', 's', ARGV[i], 'n', ARGV[i + 1], 'd', ARGV[i + 2])
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'first_chunk_ms', now)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return 1
"""
)

# KEYS: record, result list, stream, running, stats
# ARGV: worker_id, attempt, request_id, status (completed|failed), field (result|error),
#       value, envelope (JSON for the result list; '' when completed: built here around the
#       result JSON, so a result crosses the wire once), stream flag ('1'/'0'), retention_s,
#       chunks (pieces streamed)
# Returns 1 (delivered), 0 (lease lost: discarded), -1 (was cancelled: discarded)
COMPLETE = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_ms',
                       'started_ms', 'first_chunk_ms')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == 'cancelled' then return -1 end
  return 0
end
local created = tonumber(cur[4]) or now
local started = tonumber(cur[5]) or now
local ttfc = ''
if cur[6] then ttfc = (tonumber(cur[6]) or now) - created end
redis.call('HSET', KEYS[1], 'status', ARGV[4], ARGV[5], ARGV[6], 'finished_ms', now,
           'queue_wait_ms', started - created, 'duration_ms', now - started, 'ttfc_ms', ttfc,
           'chunks', ARGV[10])
local retention = tonumber(ARGV[9])
redis.call('EXPIRE', KEYS[1], retention)
if ARGV[8] == '1' then
  if ARGV[4] == 'completed' then
    redis.call('XADD', KEYS[3], '*', 'k', 'e')
  else
    redis.call('XADD', KEYS[3], '*', 'k', 'f', 'd', ARGV[6])
  end
  redis.call('EXPIRE', KEYS[3], retention)
else
  local env = ARGV[7]
  if env == '' then env = '{"status":"completed","result":' .. ARGV[6] .. '}' end
  redis.call('LPUSH', KEYS[2], env)
  redis.call('EXPIRE', KEYS[2], retention)
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
return 1
"""
)

# KEYS: record, pending, running, result list, stream
# ARGV: request_id, reason, retention_s
# Returns the status the request had ('' when there is no record).
CANCEL = (
    _NOW
    + """
local st = redis.call('HMGET', KEYS[1], 'status', 'stream')
if st[1] == false then return '' end
if st[1] ~= 'pending' and st[1] ~= 'running' then return st[1] end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_ms', now, 'error', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local retention = tonumber(ARGV[3])
redis.call('EXPIRE', KEYS[1], retention)
if st[2] == '1' then
  redis.call('XADD', KEYS[5], '*', 'k', 'c', 'd', ARGV[2])
  redis.call('EXPIRE', KEYS[5], retention)
else
  redis.call('LPUSH', KEYS[4], cjson.encode({status = 'cancelled', error = ARGV[2]}))
  redis.call('EXPIRE', KEYS[4], retention)
end
return st[1]
"""
)

# KEYS: pending.  Returns {priority, count, priority, count, ...} highest priority first,
# one ZCOUNT per distinct priority (O(P log N)), never a scan of the whole set.
PENDING_BY_PRIORITY = """
local span = 1099511627776
local out = {}
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
while #top > 0 do
  local p = math.floor(tonumber(top[2]) / span) + 1
  local lo = string.format('%d', p * span - (span - 1))
  local hi = string.format('%d', p * span - 1)
  out[#out + 1] = p
  out[#out + 1] = redis.call('ZCOUNT', KEYS[1], lo, hi)
  top = redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. lo, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
end
return out
"""

ALL: dict[str, str] = {
    "submit": SUBMIT,
    "pop": POP,
    "append": APPEND,
    "complete": COMPLETE,
    "cancel": CANCEL,
    "pending_by_priority": PENDING_BY_PRIORITY,
}

# KEYS: record.  ARGV: extra_ms.  Moves the deadline of a pending/running request to
# now + extra_ms (the "wait longer" recipe). Returns the status ('' if no record).
EXTEND = (
    _NOW
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if st == false then return '' end
if st == 'pending' or st == 'running' then
  redis.call('HSET', KEYS[1], 'deadline_ms', now + tonumber(ARGV[1]))
end
return st
"""
)

ALL["extend"] = EXTEND

# KEYS: running.  ARGV: base, lease_ms, worker_id, then pairs (id, attempt).
# Renews the leases this worker still holds. Returns one code per pair: 1 renewed,
# 0 lost (reaped and taken over: stop working on it), -1 cancelled (stop generating).
RENEW = (
    _NOW
    + """
local out = {}
for i = 4, #ARGV, 2 do
  local cur = redis.call('HMGET', ARGV[1] .. ':req:' .. ARGV[i], 'status', 'worker', 'attempts')
  if cur[1] == 'running' and cur[2] == ARGV[3] and cur[3] == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[i])
    out[#out + 1] = 1
  elseif cur[1] == 'cancelled' then
    out[#out + 1] = -1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

ALL["renew"] = RENEW

# KEYS: running, pending, wake, dead
# ARGV: base, max_attempts, limit, retention_s
# Requests whose lease ran out (their worker died or hung) go back to the pending set with
# their original score, or to the dead letters after max_attempts. A stream gets a reset
# marker ('k=r'), so its readers learn at once that the attempt they watched was lost.
# Returns {requeued ids..., '|', dead ids...}.
REAP = (
    _NOW
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local requeued, dead = {}, {}
local retention = tonumber(ARGV[4])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local rk = ARGV[1] .. ':req:' .. id
  local f = redis.call('HMGET', rk, 'status', 'attempts', 'score', 'stream', 'worker',
                       'max_attempts')
  if f[1] == 'running' then
    local attempts = tonumber(f[2]) or 0
    local sk = ARGV[1] .. ':stream:' .. id
    local why = 'worker ' .. tostring(f[5]) .. ' stopped renewing its lease (attempt ' ..
                attempts .. ')'
    local max_attempts = tonumber(f[6]) or tonumber(ARGV[2])
    if attempts >= max_attempts or tonumber(f[3]) == nil then
      local err = 'dead-lettered after ' .. attempts .. ' attempt(s): ' .. why
      redis.call('HSET', rk, 'status', 'failed', 'error', err, 'finished_ms', now)
      redis.call('ZADD', KEYS[4], now, id)
      if f[4] == '1' then
        redis.call('XADD', sk, '*', 'k', 'f', 'd', err)
        redis.call('EXPIRE', sk, retention)
      else
        local lk = ARGV[1] .. ':res:' .. id
        redis.call('LPUSH', lk, cjson.encode({status = 'failed', error = err}))
        redis.call('EXPIRE', lk, retention)
      end
      redis.call('EXPIRE', rk, retention)
      dead[#dead + 1] = id
    else
      redis.call('HSET', rk, 'status', 'pending', 'error', why)
      redis.call('HDEL', rk, 'first_chunk_ms')
      redis.call('ZADD', KEYS[2], f[3], id)
      redis.call('LPUSH', KEYS[3], '1')
      if f[4] == '1' then redis.call('XADD', sk, '*', 'k', 'r', 'd', why) end
      requeued[#requeued + 1] = id
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. string.format('%d', now - retention * 1000))
requeued[#requeued + 1] = '|'
for _, id in ipairs(dead) do requeued[#requeued + 1] = id end
return requeued
"""
)

# KEYS: record, dead, pending, wake, result list, stream.  ARGV: id.
# Puts a dead-lettered request back in the queue with a fresh budget of attempts. Its stale
# failure envelope / stream are deleted; attempt numbers keep counting up (lease tokens are
# never reused). Returns 1, or 0 when it is not in `dead`.
REQUEUE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return 0 end
local f = redis.call('HMGET', KEYS[1], 'score', 'attempts', 'max_attempts')
if not f[1] then return 0 end
local budget = (tonumber(f[2]) or 0) + (tonumber(f[3]) or 3)
redis.call('HSET', KEYS[1], 'status', 'pending', 'max_attempts', budget, 'error', '')
redis.call('HDEL', KEYS[1], 'finished_ms', 'first_chunk_ms')
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('ZADD', KEYS[3], f[1], ARGV[1])
redis.call('LPUSH', KEYS[4], '1')
return 1
"""

ALL["reap"] = REAP
ALL["requeue"] = REQUEUE

# KEYS: record, running, pending, wake, stream.  ARGV: worker_id, attempt, id.
# A stopping worker hands a request back: pending again with its score, and the attempt it
# used is not counted. Only while the lease is still this worker's. Returns 1 or 0.
HANDBACK = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'score', 'stream')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] or not cur[4] then
  return 0
end
redis.call('HINCRBY', KEYS[1], 'max_attempts', 1)  -- this attempt does not count
redis.call('HSET', KEYS[1], 'status', 'pending',
           'error', 'handed back by stopping worker ' .. ARGV[1])
redis.call('HDEL', KEYS[1], 'first_chunk_ms')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], cur[4], ARGV[3])
redis.call('LPUSH', KEYS[4], '1')
if cur[5] == '1' then
  redis.call('XADD', KEYS[5], '*', 'k', 'r', 'd', 'worker ' .. ARGV[1] .. ' stopped; handed back')
end
return 1
"""

ALL["handback"] = HANDBACK
