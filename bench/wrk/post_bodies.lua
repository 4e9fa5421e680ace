-- POST JSON bodies read from a file (one body per line) to wrk's URL, rotating among them, and
-- print one JSON line of results when done:
--
--   wrk -t1 -c16 -d10s -s bench/wrk/post_bodies.lua http://127.0.0.1:8000/v2/models/m/infer \
--       -- bodies.jsonl
--
-- The line starts with "RESULT " and holds request and non-2xx counts, socket errors and latency
-- percentiles in microseconds. Each thread starts at a different body so threads do not send the
-- same sequence.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local bodies = {}
local next_body = 1
local headers = { ["Content-Type"] = "application/json" }
non2xx = 0
first_error = ""

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s post_bodies.lua URL -- BODIES_FILE")
  end
  for line in io.lines(path) do
    if #line > 0 then
      table.insert(bodies, line)
    end
  end
  if #bodies == 0 then
    error("no bodies in " .. path)
  end
  next_body = (thread_index * 7919) % #bodies + 1
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, headers, body)
end

function response(status, _, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then
      first_error = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function done(summary, latency, _)
  local total_non2xx = 0
  local error_sample = ""
  for _, thread in ipairs(threads) do
    total_non2xx = total_non2xx + (thread:get("non2xx") or 0)
    local sample = thread:get("first_error") or ""
    if error_sample == "" then
      error_sample = sample
    end
  end
  local e = summary.errors
  local fields = {
    string.format('"requests": %d', summary.requests),
    string.format('"duration_us": %d', summary.duration),
    string.format('"bytes": %d', summary.bytes),
    string.format('"non2xx": %d', total_non2xx),
    string.format(
      '"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.timeout
    ),
    string.format(
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d, "mean": %.1f}',
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean
    ),
    '"first_error": ' .. json_string(error_sample),
  }
  io.write("RESULT {" .. table.concat(fields, ", ") .. "}\n")
end
