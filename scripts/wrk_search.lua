-- wrk script for scripts/bench_search.sh.
--   wrk -tT ... -s scripts/wrk_search.lua URL -- uncached QUERIES START T
--   wrk ... -s scripts/wrk_search.lua URL -- cached
-- uncached: every request takes the next unused line of QUERIES from line
-- START on (thread i of T takes lines START+i, START+i+T, ...), so the
-- text cache and the page cache always miss and the floor can embed the
-- very same texts; cached: one query, again and again.
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, queries, next_line, stride = "uncached", {}, 1, 1

function init(args)
  mode = args[1] or "uncached"
  if mode == "uncached" then
    for line in io.lines(args[2]) do
      table.insert(queries, line)
    end
    stride = tonumber(args[4])
    next_line = tonumber(args[3]) + 1 + tid
  end
  exhausted = 0
  used = 0
end

function request()
  local text
  if mode == "cached" then
    text = "red leather ankle boots"
  elseif next_line > #queries then
    -- Out of fresh texts: still unique, but counted so the run is redone
    -- with a longer list.
    exhausted = exhausted + 1
    text = "exhausted " .. exhausted .. " " .. math.random(1, 1000000000)
  else
    text = queries[next_line]
    next_line = next_line + stride
    used = used + 1
  end
  local body = '{"text":"' .. text .. '","limit":10}'
  return wrk.format("POST", "/v1/tenants/default/search",
    {["Content-Type"] = "application/json"}, body)
end

-- done() runs in wrk's main Lua state; the threads' counters are read
-- through the handles kept by setup().
function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  local used, exhausted = 0, 0
  for _, t in ipairs(threads) do
    used = used + (t:get("used") or 0)
    exhausted = exhausted + (t:get("exhausted") or 0)
  end
  io.write(string.format(
    '{"requests":%d,"errors":%d,"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"queries_used":%d,"queries_exhausted":%d}\n',
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, used, exhausted))
end
