-- Cluster only, on the home slot: move the purge generation past now and return it; each
-- partition then records the purge's tombstone under this generation.
local gen = purge_state()
local generation = math.max(gen + 1, now_us())
redis.call('HSET', KEYS[1], 'gen', dec(generation))
return generation
