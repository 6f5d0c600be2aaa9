-- The purges finished after a reader's last sequence, on the home slot.
-- KEYS[3] the finished-purge log (see finished.lua). ARGV[1] the reader's last sequence,
-- ARGV[2] at most this many.
-- Returns {purge generation now, newest sequence, oldest sequence kept (0: none), then
-- member, sequence, member, sequence, ...}, all as text.
local gen = purge_state()
local newest = redis.call('HGET', KEYS[1], 'finished') or '0'
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')[2] or '0'
local out = {dec(gen), newest, oldest}
local after = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
for _, v in ipairs(after) do
  out[#out + 1] = v
end
return out
