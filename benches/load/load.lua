-- wrk script of the load harness (benches/load/run.sh).
--
-- Without ZIPF_N: every request is the URL given to wrk.
-- With ZIPF_N=N: GET /api/contractors/<id>/bundle, id in ZIPF_OFFSET + 1..N drawn from a zipf-like
-- distribution with exponent ZIPF_S (default 1.0); the table and the per-id requests are
-- precomputed, and every thread uses a fixed seed so every system sees the same sequence.
-- With UNIQUE_IDS=PREFIX: GET /api/contractors/PREFIX-<thread>-<n>/bundle, n counting up, so
-- every request is a miss (the miss-path profile of profile.sh). With UNIQUE_LIMIT=N as well,
-- each thread stops after N responses (the 200,000-key flood of scenario 7).
-- done() prints one line "WRKJSON {...}" with counts and latency percentiles (microseconds).

local zipf_n = tonumber(os.getenv("ZIPF_N") or "0")
local zipf_s = tonumber(os.getenv("ZIPF_S") or "1.0")
local zipf_offset = tonumber(os.getenv("ZIPF_OFFSET") or "0")
local unique = os.getenv("UNIQUE_IDS")
if unique == "" then unique = nil end
local unique_limit = tonumber(os.getenv("UNIQUE_LIMIT") or "0")
local counter = 0
local responses = 0
local thread_no = 0
local threads = {}

function setup(thread)
  thread_no = thread_no + 1
  thread:set("id", thread_no)
  table.insert(threads, thread)
end

local cdf, reqs

function init(args)
  if zipf_n <= 0 then return end
  math.randomseed(1000 + (id or 0))
  cdf, reqs = {}, {}
  local total = 0
  for i = 1, zipf_n do
    total = total + 1 / (i ^ zipf_s)
    cdf[i] = total
  end
  for i = 1, zipf_n do
    cdf[i] = cdf[i] / total
    reqs[i] = wrk.format("GET", "/api/contractors/" .. (zipf_offset + i) .. "/bundle")
  end
end

function request()
  if unique then
    counter = counter + 1
    return wrk.format("GET", "/api/contractors/" .. unique .. "-" .. (id or 0) .. "-" .. counter .. "/bundle")
  end
  if not reqs then return wrk.request() end
  local r = math.random()
  local lo, hi = 1, zipf_n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return reqs[lo]
end

if unique_limit > 0 then
  -- Defined only when needed: wrk calls response() for every response once it exists.
  function response(status, headers, body)
    responses = responses + 1
    if responses >= unique_limit then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
