-- wrk script shared by benches/run.sh and benches/soak.sh.
--
-- Environment:
--   WRK_PATHS      comma-separated request paths, cycled per request (default: the URL's path)
--   WRK_BODY_FILE  when set: every request is a POST of this file's bytes
--   WRK_CONTENT_TYPE  Content-Type of that body (default application/octet-stream)
-- At the end it prints one line, "WRKJSON {...}", with the request count, duration, every
-- error class wrk counts (connect/read/write/timeout, and "status": responses >= 400), and
-- latency percentiles in microseconds, for the Python drivers in benches/py/ to parse.

local paths = {}
local n = 0

init = function(args)
  local list = os.getenv("WRK_PATHS")
  if list and #list > 0 then
    for p in string.gmatch(list, "[^,]+") do table.insert(paths, p) end
  end
  local body_file = os.getenv("WRK_BODY_FILE")
  if body_file and #body_file > 0 then
    local f = assert(io.open(body_file, "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/octet-stream"
  end
end

request = function()
  if #paths == 0 then
    return wrk.request()
  end
  n = n + 1
  return wrk.format(nil, paths[(n % #paths) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
