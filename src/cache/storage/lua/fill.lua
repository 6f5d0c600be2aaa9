-- The cross-instance fill lock of one entry, read together with the entry, atomically.
-- KEYS[1] the entry, KEYS[2] its fill lock (the same slot; the prelude's keys are not used).
-- ARGV[1] the caller's token, ARGV[2] the lock's time to live in ms, ARGV[3] '1' when the
-- caller refreshes a soft-purged entry: an entry still marked soft-purged (format 3, flag 2)
-- then counts as absent (its refresh is what the lock is for); '2' when the caller refetches
-- an entry that expired: an entry whose fresh_until (the u64 of nanoseconds after the
-- header: offset 6 in format 3, 5 before) is not after ARGV[4] (ms since the epoch) then
-- counts as absent.
-- Returns {2, value} when the entry is there (whoever holds the lock), else {state, ''}: 1
-- when the lock was free and is now the caller's, 3 when its holder gave up (the response
-- was not storable: fetch without the lock), 0 when another holder has it.
-- Reading the entry and taking the lock in one step is what keeps a late caller from
-- fetching again: a holder stores the entry before it releases the lock, so a caller that
-- finds the lock free also finds the entry, unless no entry was made.
local value = redis.call('GET', KEYS[1])
local function fresh_until_ms(v)
  local at = 6
  if string.byte(v, 5) == 3 then at = 7 end
  local n = 0
  for i = at, at + 7 do n = n * 256 + (string.byte(v, i) or 0) end
  return n / 1000000
end
local absent = value and ((ARGV[3] == '1' and string.byte(value, 5) == 3
    and bit.band(string.byte(value, 6), 2) ~= 0)
  or (ARGV[3] == '2' and fresh_until_ms(value) <= tonumber(ARGV[4])))
if value and not absent then
  return {2, value}
end
local held = redis.call('GET', KEYS[2])
if held == 'gave-up' then
  return {3, ''}
end
if held then
  return {0, ''}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {1, ''}
