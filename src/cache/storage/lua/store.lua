-- Store one entry unless a purge after its work began matches it.
-- KEYS[3] entry key, KEYS[4] url set (lexicographic, score 0), KEYS[5] url expiry set.
-- ARGV[1] key prefix ({prefix}v2:), ARGV[2] encoded entry, ARGV[3] ttl in ms,
-- ARGV[4] generation at which the work began, ARGV[5] url ('' = none), ARGV[6] '-' on a
-- standalone Redis, else (a cluster partition) '' or the generation to seed a partition whose
-- state is missing with, ARGV[7..] tags.
-- Returns 1 stored, 0 refused (a purge matched), -1 refused (the record does not reach back),
-- -2 refused (cluster: the partition has no state yet; call again with a seed).
local SCAN = 1000 -- tombstones newer than the start that are looked at; more refuses
local TRIM = 64   -- expired urls dropped from the url sets per store

local seed = ARGV[6]
local partition = seed ~= '-'
if partition and redis.call('EXISTS', KEYS[1]) == 0 then
  -- a partition's state starts at the cluster's generation (the home slot's), never at this
  -- node's clock: purges before now left no tombstone here, so older work is refused
  if seed == '' then return -2 end
  redis.call('HSET', KEYS[1], 'gen', seed, 'floor', seed, 'tombs', '0')
end
local gen, floor = purge_state()
local start = tonumber(ARGV[4])
-- a partition's own generation lags the home slot's between purges, so only a standalone
-- Redis can tell "began after the current generation" (its state was lost) from it
if start < floor or (not partition and start > gen) then
  return -1
end
local url = ARGV[5]
local tags = {}
for i = 7, #ARGV do
  tags[ARGV[i]] = true
end
local newer = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[4], '+inf', 'LIMIT', 0, SCAN + 1)
if #newer > SCAN then
  return -1
end
for _, m in ipairs(newer) do
  local kind, target = string.sub(m, 1, 1), string.sub(m, 2)
  if kind == 't' then
    if tags[target] then return 0 end
  elseif url ~= '' then
    if kind == 'u' and url == target then return 0 end
    if kind == 'p' and string.sub(url, 1, #target) == target then return 0 end
  end
end

-- The indexes are written before the entry: a script that fails midway is not rolled back,
-- and an index member without its entry is harmless (a purge deletes nothing, the member
-- expires by its score), while an entry outside the indexes could never be purged.
local now = math.floor(now_us() / 1000)
local ttl = tonumber(ARGV[3])
local expiry = dec(now + ttl)
local expired = '(' .. dec(now)
-- a key lives at least as long as the entry: Redis 7's PEXPIRE NX then GT, on Redis 6.2 too.
-- `left` is its PTTL when the caller has read it already (-2: it did not exist then, and
-- the caller has made it since, without a time to live)
local function live_for_ttl(key, left)
  left = left or redis.call('PTTL', key)
  if left < ttl then
    redis.call('PEXPIRE', key, ARGV[3])
  end
end
-- an index member lives as long as its entry: scored by the entry's expiry, trimmed here
-- (a new index has nothing to trim; most stores of new urls make one)
local function index(key)
  local left = redis.call('PTTL', key)
  redis.call('ZADD', key, expiry, KEYS[3])
  if left ~= -2 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', expired)
  end
  live_for_ttl(key, left)
end
if url ~= '' then
  index(ARGV[1] .. 'url:' .. url)
  redis.call('ZADD', KEYS[4], 0, url)
  redis.call('ZADD', KEYS[5], 'GT', expiry, url)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', expired, 'LIMIT', 0, TRIM)
  for _, u in ipairs(gone) do
    redis.call('ZREM', KEYS[4], u)
    redis.call('ZREM', KEYS[5], u)
    redis.call('DEL', ARGV[1] .. 'url:' .. u)
  end
  live_for_ttl(KEYS[4])
  live_for_ttl(KEYS[5])
end
for i = 7, #ARGV do
  index(ARGV[1] .. 'tag:' .. ARGV[i])
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1
