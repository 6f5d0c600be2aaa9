-- One bounded batch of a purge; the first batch also records the tombstone.
-- KEYS[3] url set (lexicographic), KEYS[4] url expiry set.
-- ARGV[1] key prefix ({prefix}v2:), ARGV[2] kind ('u' url, 'p' prefix, 't' tag),
-- ARGV[3] target, ARGV[4] '1' on the first batch, ARGV[5] cursor ('' = from the start),
-- ARGV[6] batch size (urls for a prefix, entries for a tag), ARGV[7] '' on a standalone
-- Redis, else (a cluster partition) the purge's generation, taken from the home slot.
-- Returns {generation recorded (0 after the first batch), entries deleted, next cursor
-- ('' = done)}.
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
  redis.call('ZADD', KEYS[2], dec(generation), kind .. target)
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

local deleted = 0
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
if kind == 'u' then
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
