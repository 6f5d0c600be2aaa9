-- Shared by every sidecache script (the text is prepended to each).
-- KEYS[1] is the purge state hash ({prefix}v2:purge: gen, floor, tombs),
-- KEYS[2] the tombstone set ({prefix}v2:tombs: member kind letter .. target, score generation).

-- A number as the exact decimal text Redis expects (generations are microseconds, < 2^53).
local function dec(n)
  return string.format('%.0f', n)
end

-- Redis's clock in microseconds.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The purge generation and floor. A missing state (a new or emptied Redis, an evicted hash)
-- starts at the clock with the floor there too, so work that began before it is refused; a
-- state that recorded tombstones whose set is gone (expired or evicted) raises the floor to
-- the generation the same way.
local function purge_state()
  -- one call for the three fields (each call from a script costs a command lookup)
  local state = redis.call('HMGET', KEYS[1], 'gen', 'floor', 'tombs')
  local gen = tonumber(state[1])
  if not gen then
    gen = now_us()
    redis.call('HSET', KEYS[1], 'gen', dec(gen), 'floor', dec(gen), 'tombs', '0')
    return gen, gen
  end
  local floor = tonumber(state[2]) or gen
  if state[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
    floor = gen
    redis.call('HSET', KEYS[1], 'floor', dec(gen), 'tombs', '0')
  end
  return gen, floor
end
