-- COMPLETE: deliver a request's outcome (result list or stream end), metrics, TTLs and
-- counters, only while the lease is still this worker's. A late or duplicate completion is
-- discarded.
-- KEYS: record, result list, stream, running, stats
-- ARGV: worker_id, attempt, request_id, status (COMPLETED|FAILED), field (result|error),
--       value, envelope (for the result list; '' when completed: built here around the
--       result JSON, so a result crosses the wire once), stream flag ('1'/'0'), retention_s,
--       pieces streamed
-- Returns LEASE_OK (delivered), LEASE_LOST or LEASE_CANCELLED (discarded).
local cur = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_ms',
                       'started_ms', 'first_chunk_ms')
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == CANCELLED then return LEASE_CANCELLED end
  return LEASE_LOST
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
  if ARGV[4] == COMPLETED then
    redis.call('XADD', KEYS[3], '*', 'k', K_END)
  else
    redis.call('XADD', KEYS[3], '*', 'k', K_FAILED, 'd', ARGV[6])
  end
  redis.call('EXPIRE', KEYS[3], retention)
else
  local env = ARGV[7]
  if env == '' then env = COMPLETED_ENVELOPE_HEAD .. ARGV[6] .. '}' end
  redis.call('LPUSH', KEYS[2], env)
  redis.call('EXPIRE', KEYS[2], retention)
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('HINCRBY', KEYS[5], ARGV[4], 1)
return LEASE_OK
