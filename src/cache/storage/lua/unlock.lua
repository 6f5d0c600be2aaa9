-- Release a fill lock (KEYS[1]) if it still holds this holder's token (ARGV[1]). With
-- ARGV[2] > 0 the holder gave up (its response could not be stored): the lock then says so
-- for ARGV[2] ms, so its waiters fetch at once instead of taking the lock in turn.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], 'gave-up', 'PX', ARGV[2])
    return 1
  end
  return redis.call('DEL', KEYS[1])
end
return 0
