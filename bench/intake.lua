-- wrk script: POST signed Tencent recording callbacks, each with a unique file_id, and count answers.
-- BODY holds the JSON body with __ID__ where the file id goes; RUN names this run (unique ids across runs).
local body = os.getenv("BODY")
local run = os.getenv("RUN") or "run"
local threads = {}
local counter = 0
ok, other = 0, 0  -- globals: done() reads them with thread:get

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local id = run .. "-" .. tid .. "-" .. counter
  return wrk.format(nil, nil, nil, (body:gsub("__ID__", id)))
end

function response(status, headers, resp_body)
  if status == 200 then ok = ok + 1 else other = other + 1 end
end

function done(summary, latency, requests)
  local ok_total, other_total = 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    other_total = other_total + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "ok": %d, "other": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, ok_total, other_total, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
