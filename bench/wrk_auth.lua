-- wrk script: GET a random line of a list file, each "PATH" or "PATH<TAB>BEARER TOKEN".
-- Usage: wrk -s wrk_auth.lua URL -- LINES_FILE
-- The same script drives the secured and the open server, so the generator's own work per
-- request is alike on both (the open server's file simply has no tokens).

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_id", counter)
   table.insert(threads, thread)
end

function init(args)
   requests = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         local path, token = line:match("^([^\t]+)\t(.+)$")
         local headers = {}
         if path == nil then
            path = line
         else
            headers["Authorization"] = "Bearer " .. token
         end
         headers["Accept"] = "application/fhir+json"
         requests[#requests + 1] = wrk.format("GET", path, headers)
      end
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
   return requests[math.random(#requests)]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
