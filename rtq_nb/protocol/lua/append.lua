-- APPEND: write stream chunks, only while the lease is still this worker's.
-- KEYS: record, stream
-- ARGV: worker_id, attempt, retention_s, first ('1' on the first write), then quadruples
--       (seq, pieces, text, the worker's signature of the chunk or '' when unsigned)
-- Returns LEASE_OK (appended), LEASE_LOST (discarded, stop generating: the lease is not this
-- worker's, or the record or the stream key is of another type, so nothing can be written;
-- COMPLETE then fails the request with the reason), LEASE_CANCELLED (stop generating).
-- Validates first: nothing is written unless every key it touches has its type.
local cur = redis.pcall('HMGET', KEYS[1], 'status', 'worker', 'attempts')
if cur['err'] then return LEASE_LOST end
if cur[1] ~= RUNNING or cur[2] ~= ARGV[1] or cur[3] ~= ARGV[2] then
  if cur[1] == CANCELLED then return LEASE_CANCELLED end
  return LEASE_LOST
end
for i = 5, #ARGV, 4 do  -- the first XADD is the first write: refused, it writes nothing
  local added
  if ARGV[i + 3] == '' then
    added = redis.pcall('XADD', KEYS[2], '*', 'k', K_DATA, 's', ARGV[i], 'n', ARGV[i + 1],
                        'd', ARGV[i + 2])
  else
    added = redis.pcall('XADD', KEYS[2], '*', 'k', K_DATA, 's', ARGV[i], 'n', ARGV[i + 1],
                        'd', ARGV[i + 2], 'a', ARGV[i + 3])
  end
  if type(added) == 'table' and added['err'] then
    if string.find(added['err'], 'OOM', 1, true) then return added end  -- full: retried
    return LEASE_LOST
  end
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'first_chunk_ms', now)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return LEASE_OK
