-- Store one entry unless a purge after its work began matches it.
-- KEYS[3] entry key, KEYS[4] url set (lexicographic, score 0), KEYS[5] url expiry set.
-- ARGV[1] key prefix ({prefix}v2:), ARGV[2] encoded entry, ARGV[3] ttl in ms,
-- ARGV[4] generation at which the work began, ARGV[5] url ('' = none), ARGV[6..] tags.
-- Returns 1 stored, 0 refused (a purge matched), -1 refused (the record does not reach back).
local SCAN = 1000 -- tombstones newer than the start that are looked at; more refuses
local TRIM = 64   -- expired urls dropped from the url sets per store

local gen, floor = purge_state()
local start = tonumber(ARGV[4])
if start < floor or start > gen then
  return -1
end
local url = ARGV[5]
local tags = {}
for i = 6, #ARGV do
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

redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
local now = math.floor(now_us() / 1000)
local expiry = dec(now + tonumber(ARGV[3]))
local expired = '(' .. dec(now)
local function live_for_ttl(key)
  redis.call('PEXPIRE', key, ARGV[3], 'NX')
  redis.call('PEXPIRE', key, ARGV[3], 'GT')
end
-- an index member lives as long as its entry: scored by the entry's expiry, trimmed here
local function index(key)
  redis.call('ZADD', key, expiry, KEYS[3])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', expired)
  live_for_ttl(key)
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
for i = 6, #ARGV do
  index(ARGV[1] .. 'tag:' .. ARGV[i])
end
return 1
