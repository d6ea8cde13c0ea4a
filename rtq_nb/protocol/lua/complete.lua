-- COMPLETE: deliver a request's outcome (result list or stream end), metrics, TTLs and
-- counters, only while the lease is still this worker's. A late or duplicate completion is
-- discarded.
-- KEYS: record, result list, stream, running, stats, history, unsuccessful
-- ARGV: worker_id, attempt, request_id, status (COMPLETED|FAILED), field (result|error),
--       value, envelope (for the result list; '' when completed: built here around the
--       result JSON, so a result crosses the wire once), stream flag ('1'/'0'), retention_s,
--       pieces streamed, the worker's signature of value ('' unsigned: then the envelope,
--       stream marker and record carry none), the signature of the stream's end marker,
--       an extra stats counter to count ('' for none; e.g. 'unauthenticated': such a
--       request, perhaps written by hand, is also added to the history, so views show it),
--       [prompt tokens, completion tokens: the model's usage ('' or absent: none)]
-- Returns LEASE_OK (delivered), LEASE_LOST or LEASE_CANCELLED (discarded).
-- Validates first: a record that is not a hash (read, before any write) is LEASE_LOST. The
-- output write (result list or stream) comes before the record's: if that key is of another
-- type it writes nothing and the record says failed, with the reason; running, stats and
-- unsuccessful of another type are left alone (the queue's own keys), and a counter that is
-- not a number is not counted.
local cur = redis.pcall('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_ms',
                        'started_ms', 'first_chunk_ms')
if cur['err'] then return LEASE_LOST end
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == CANCELLED then return LEASE_CANCELLED end
  return LEASE_LOST
end
-- writes (the first one frees memory: a full Redis still takes a completion, OOM refuses only
-- a script whose first write would grow it)
redis.pcall('ZREM', KEYS[4], ARGV[3])
local status, field, value = ARGV[4], ARGV[5], ARGV[6]
local retention = tonumber(ARGV[9])
local sig = ARGV[11]
local out_key, sent
if ARGV[8] == '1' then
  out_key = KEYS[3]
  if status == COMPLETED and sig == '' then
    sent = redis.pcall('XADD', out_key, '*', 'k', K_END)
  elseif status == COMPLETED then
    sent = redis.pcall('XADD', out_key, '*', 'k', K_END, 'n', ARGV[10], 'a', ARGV[12])
  elseif sig == '' then
    sent = redis.pcall('XADD', out_key, '*', 'k', K_FAILED, 'd', value)
  else
    sent = redis.pcall('XADD', out_key, '*', 'k', K_FAILED, 'd', value, 'a', sig)
  end
else
  out_key = KEYS[2]
  local env = ARGV[7]
  if env == '' and sig == '' then
    env = COMPLETED_ENVELOPE_HEAD .. value .. '}'
  elseif env == '' then
    env = COMPLETED_ENVELOPE_HEAD .. value .. ENVELOPE_SIG .. sig .. '"}'
  end
  sent = redis.pcall('LPUSH', out_key, env)
end
if type(sent) == 'table' and sent['err'] then
  status, field, value = FAILED, 'error', 'cannot deliver: ' .. out_key .. ': ' .. sent['err']
  sig = ''
else
  redis.call('EXPIRE', out_key, retention)
end
local created = tonumber(cur[4]) or now
local started = tonumber(cur[5]) or now
local ttfc = ''
if cur[6] then ttfc = (tonumber(cur[6]) or now) - created end
redis.call('HSET', KEYS[1], 'status', status, field, value, 'finished_ms', now,
           'queue_wait_ms', started - created, 'duration_ms', now - started, 'ttfc_ms', ttfc,
           'chunks', ARGV[10])
if sig ~= '' then redis.call('HSET', KEYS[1], 'res_sig', sig) end
local prompt_tokens, completion_tokens = tonumber(ARGV[14] or ''), tonumber(ARGV[15] or '')
if prompt_tokens and completion_tokens then
  redis.call('HSET', KEYS[1], 'prompt_tokens', string.format('%d', prompt_tokens),
             'completion_tokens', string.format('%d', completion_tokens))
end
redis.call('EXPIRE', KEYS[1], retention)
redis.pcall('HINCRBY', KEYS[5], status, 1)  -- counters: best effort
if status ~= COMPLETED then redis.pcall('ZADD', KEYS[7], created, ARGV[3]) end  -- best effort
if ARGV[13] ~= '' then
  redis.pcall('HINCRBY', KEYS[5], ARGV[13], 1)
  redis.pcall('ZADD', KEYS[6], 'NX', created, ARGV[3])
end
return LEASE_OK
