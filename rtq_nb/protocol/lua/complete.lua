-- COMPLETE: deliver a request's outcome (result list or stream end), metrics, TTLs and
-- counters, only while the lease is still this worker's. A late or duplicate completion is
-- discarded.
-- KEYS: record, result list, stream, running, stats
-- ARGV: worker_id, attempt, request_id, status (COMPLETED|FAILED), field (result|error),
--       value, envelope (for the result list; '' when completed: built here around the
--       result JSON, so a result crosses the wire once), stream flag ('1'/'0'), retention_s,
--       pieces streamed
-- Returns LEASE_OK (delivered), LEASE_LOST or LEASE_CANCELLED (discarded).
-- Validates first: a record of another type is LEASE_LOST; an output key (result list or
-- stream) of another type fails the request in its record with the reason, and is not
-- written; running or stats of another type are left alone (the queue's own keys), and a
-- counter that is not a number is not counted.
if bad_type(KEYS[1], 'hash') then return LEASE_LOST end
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_ms',
                       'started_ms', 'first_chunk_ms')
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == CANCELLED then return LEASE_CANCELLED end
  return LEASE_LOST
end
local streaming = ARGV[8] == '1'
local out_bad = false
if streaming then out_bad = bad_type(KEYS[3], 'stream') else out_bad = bad_type(KEYS[2], 'list') end
local running_ok = not bad_type(KEYS[4], 'zset')
local stats_ok = not bad_type(KEYS[5], 'hash')
local status, field, value = ARGV[4], ARGV[5], ARGV[6]
if out_bad then
  status, field, value = FAILED, 'error', 'cannot deliver: ' .. out_bad
end
-- writes (the first one frees memory: a full Redis still takes a completion, OOM refuses only
-- a script whose first write would grow it)
if running_ok then redis.call('ZREM', KEYS[4], ARGV[3]) end
local created = tonumber(cur[4]) or now
local started = tonumber(cur[5]) or now
local ttfc = ''
if cur[6] then ttfc = (tonumber(cur[6]) or now) - created end
redis.call('HSET', KEYS[1], 'status', status, field, value, 'finished_ms', now,
           'queue_wait_ms', started - created, 'duration_ms', now - started, 'ttfc_ms', ttfc,
           'chunks', ARGV[10])
local retention = tonumber(ARGV[9])
redis.call('EXPIRE', KEYS[1], retention)
if out_bad then
  -- nothing to write to: the reader learns the outcome from the record
elseif streaming then
  if status == COMPLETED then
    redis.call('XADD', KEYS[3], '*', 'k', K_END)
  else
    redis.call('XADD', KEYS[3], '*', 'k', K_FAILED, 'd', value)
  end
  redis.call('EXPIRE', KEYS[3], retention)
else
  local env = ARGV[7]
  if env == '' then env = COMPLETED_ENVELOPE_HEAD .. value .. '}' end
  redis.call('LPUSH', KEYS[2], env)
  redis.call('EXPIRE', KEYS[2], retention)
end
if stats_ok then redis.pcall('HINCRBY', KEYS[5], status, 1) end  -- a counter: best effort
return LEASE_OK
