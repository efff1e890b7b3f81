-- wrk script for scripts/bench_search.sh.
--   wrk ... -s scripts/wrk_search.lua URL -- uncached|cached
-- uncached: every request a different query text (text cache and page
-- cache always miss); cached: one query, again and again.
local mode = "uncached"
local counter = 0

function init(args)
  mode = args[1] or "uncached"
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8)) or 0))
end

function request()
  counter = counter + 1
  local text
  if mode == "cached" then
    text = "red leather ankle boots"
  else
    text = "query " .. counter .. " " .. math.random(1, 1000000000) .. " red boots"
  end
  local body = '{"text":"' .. text .. '","limit":10}'
  return wrk.format("POST", "/v1/tenants/default/search",
    {["Content-Type"] = "application/json"}, body)
end

-- done() runs in wrk's main Lua state, where init() never ran: the shell
-- says which mode a line belongs to.
function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"errors":%d,"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
