-- wrk script: POST card PNGs to /classify in turn; print a JSON line of results at the end.
-- The card list comes from the CARDSENSE_BENCH_CARDS environment variable (paths, ':'-separated).
local bodies = {}
local paths = os.getenv("CARDSENSE_BENCH_CARDS") or ""
for path in string.gmatch(paths, "[^:]+") do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"

function init(args)
  i = math.random(1, #bodies)
end

function request()
  i = (i % #bodies) + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
