-- Cluster only, on one partition: a partition without state takes the home slot's
-- generation (ARGV[1]) as its generation and floor. Run on every partition when the entries
-- connection opens, before any work can begin on it, so a new cluster's partitions have
-- state before the first store or purge reaches them (a partition first seeded by a purge
-- would refuse every store whose work began before that purge, matching it or not).
-- Returns 1 if it seeded, 0 if the partition had state.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'floor', ARGV[1], 'tombs', '0')
  return 1
end
return 0
