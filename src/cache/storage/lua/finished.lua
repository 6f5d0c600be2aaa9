-- Log a purge that has finished (every batch, in every partition), on the home slot.
-- KEYS[3] the finished-purge log: sorted set, member the purge as the purge service writes
-- it (its signed message, unique per purge: it carries the purge's generation), score the
-- log's sequence, counted in the state hash's field `finished`. ARGV[1] the member.
-- Instances that missed the purge's broadcast read the log (finished_since.lua) and apply
-- it to their L1. Returns the sequence given to it. The log keeps the newest KEPT purges.
local KEPT = 100000
local seq = redis.call('HINCRBY', KEYS[1], 'finished', 1)
redis.call('ZADD', KEYS[3], seq, ARGV[1])
local excess = redis.call('ZCARD', KEYS[3]) - KEPT
if excess > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, excess - 1)
end
return seq
