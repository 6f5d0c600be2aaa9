-- One bounded batch of a purge; the first batch also records the tombstone.
-- KEYS[3] url set (lexicographic), KEYS[4] url expiry set.
-- ARGV[1] key prefix ({prefix}v2:), ARGV[2] kind ('u' url, 'p' prefix, 't' tag),
-- ARGV[3] target, ARGV[4] '1' on the first batch, ARGV[5] cursor ('' = from the start),
-- ARGV[6] batch size (urls for a prefix, entries for a tag), ARGV[7] '' on a standalone
-- Redis, else (a cluster partition) the purge's generation, taken from the home slot.
-- ARGV[8] '' for a hard purge; for a soft purge the purge's time (8 bytes, big-endian
-- nanoseconds since the Unix epoch), ARGV[9] how long a softened entry lives at most (ms),
-- ARGV[10] the grace (ms) it stays servable stale after the purge.
-- Returns {generation recorded (0 after the first batch), entries deleted (or softened),
-- next cursor ('' = done)}.
--
-- A soft purge rewrites each entry in place (format 3: magic 'SCE1', version, flags, then
-- fresh_until, created, epoch as u64 and swr as u32, big-endian): fresh_until becomes the
-- purge's time if later, swr reaches `grace` past the purge, the soft-purged flag is set.
-- An entry stored at or after the purge (a refresh) is left alone; one that may not be
-- served stale (flag 1 clear) or of an older format is deleted. Index members stay (an
-- entry keeps its indexes; a deleted one's member expires by its score), so a tag is
-- walked by rank from the newest expiry down, which later trims (of the oldest) never
-- shift.
local HORIZON_US = 600000000 -- tombstones are kept 10 minutes ...
local KEPT = 100000          -- ... and at most this many; the floor rises past older ones

local P, kind, target = ARGV[1], ARGV[2], ARGV[3]
local batch = tonumber(ARGV[6])
local generation = 0
local given = ARGV[7]
if ARGV[4] == '1' then
  if given ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[1], 'gen', given, 'floor', given, 'tombs', '0')
  end
  local gen, floor = purge_state()
  local now = now_us()
  generation = math.max(gen + 1, now)
  if given ~= '' then
    -- generations come from the home slot's clock, so the horizon is measured on it too
    generation = tonumber(given)
    now = generation
  end
  -- GT: a tombstone keeps the newest generation of its target. On a cluster a purge's
  -- generation is taken on the home slot before this step runs, so an older purge of the
  -- same target (a retried job, another instance's) can run here after a newer one; its
  -- lower score must not replace the newer's, or work begun between the two would be let
  -- through (found by the cluster torture: a HIT-L2 of the old version after a write).
  redis.call('ZADD', KEYS[2], 'GT', dec(generation), kind .. target)
  local cutoff = now - HORIZON_US
  local old = redis.call('ZREVRANGEBYSCORE', KEYS[2], dec(cutoff), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #old > 0 then
    floor = math.max(floor, tonumber(old[2]))
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', dec(cutoff))
  end
  local excess = redis.call('ZCARD', KEYS[2]) - KEPT
  if excess > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[2], excess)
    floor = math.max(floor, tonumber(popped[#popped]))
  end
  redis.call('HSET', KEYS[1], 'gen', dec(math.max(gen, generation)), 'floor', dec(floor), 'tombs', '1')
  redis.call('PEXPIRE', KEYS[2], HORIZON_US / 1000)
end

local soft = ARGV[8] ~= ''
local deleted = 0

-- an unsigned big-endian u64 at byte i of s, as a number (exact to 2^53: ample here)
local function u64(s, i)
  local a, b, c, d, e, f, g, h = string.byte(s, i, i + 7)
  return (((a * 256 + b) * 256 + c) * 256 + d) * 4294967296 + (((e * 256 + f) * 256 + g) * 256 + h)
end
local function be32(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end
-- soften (or delete) the entry at key; counts it when it did either
local function soften(key)
  local v = redis.call('GET', key)
  if not v then return end
  local at = u64(ARGV[8], 1)
  if string.sub(v, 1, 4) ~= 'SCE1' or string.byte(v, 5) ~= 3 or #v < 38
      or bit.band(string.byte(v, 6), 1) == 0 then
    deleted = deleted + redis.call('DEL', key)
    return
  end
  if u64(v, 15) >= at then return end
  local fresh_bytes = string.sub(v, 7, 14)
  local fresh = u64(v, 7)
  if fresh > at then
    fresh = at
    fresh_bytes = ARGV[8]
  end
  local swr = math.min(math.floor((at - fresh) / 1e9 + tonumber(ARGV[10]) / 1000), 4294967295)
  local flags = bit.bor(string.byte(v, 6), 2)
  local softened = string.sub(v, 1, 5) .. string.char(flags) .. fresh_bytes
    .. string.sub(v, 15, 30) .. be32(swr) .. string.sub(v, 35)
  local keep = tonumber(ARGV[9])
  local left = redis.call('PTTL', key)
  if left > 0 and left < keep then keep = left end
  redis.call('SET', key, softened, 'PX', keep)
  deleted = deleted + 1
end
-- soften the entries of up to `limit` members of index `idx` from rank `from`, newest
-- expiry first; returns how many members
local function soften_members(idx, from, limit)
  local members = redis.call('ZREVRANGE', idx, from, from + limit - 1)
  for _, m in ipairs(members) do soften(m) end
  return #members
end
-- delete the entries of up to `limit` members of index `idx`; returns how many members
local function delete_members(idx, limit)
  local members = redis.call('ZRANGE', idx, 0, limit - 1)
  if #members > 0 then
    deleted = deleted + redis.call('DEL', unpack(members))
    redis.call('ZREM', idx, unpack(members))
  end
  return #members
end
local function drop_url(u)
  local idx = P .. 'url:' .. u
  while delete_members(idx, 1000) > 0 do end
  redis.call('DEL', idx)
  redis.call('ZREM', KEYS[3], u)
  redis.call('ZREM', KEYS[4], u)
end

local next_cursor = ''
if soft then
  if kind == 'u' then
    soften_members(P .. 'url:' .. target, 0, 1000000)
  elseif kind == 't' then
    local from = tonumber(ARGV[5]) or 0
    if soften_members(P .. 'tag:' .. target, from, batch) == batch then
      next_cursor = tostring(from + batch)
    end
  else
    local from = '[' .. target
    if ARGV[5] ~= '' then from = '(' .. ARGV[5] end
    local urls = redis.call('ZRANGEBYLEX', KEYS[3], from, '[' .. target .. '\255', 'LIMIT', 0, batch)
    for _, u in ipairs(urls) do
      soften_members(P .. 'url:' .. u, 0, 1000000)
    end
    if #urls == batch then next_cursor = urls[#urls] end
  end
elseif kind == 'u' then
  drop_url(target)
elseif kind == 't' then
  local idx = P .. 'tag:' .. target
  if delete_members(idx, batch) == batch then
    next_cursor = '+'
  else
    redis.call('DEL', idx)
  end
else
  local from = '[' .. target
  if ARGV[5] ~= '' then from = '(' .. ARGV[5] end
  -- 0xff never occurs in UTF-8, so it bounds every url starting with the prefix
  local urls = redis.call('ZRANGEBYLEX', KEYS[3], from, '[' .. target .. '\255', 'LIMIT', 0, batch)
  for _, u in ipairs(urls) do
    drop_url(u)
  end
  if #urls == batch then next_cursor = urls[#urls] end
end
return {generation, deleted, next_cursor}
