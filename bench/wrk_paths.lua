-- wrk script: GET a random path from a list file, print a JSON summary when done.
-- Usage: wrk -s wrk_paths.lua URL -- PATHS_FILE
-- PATHS_FILE holds one request path a line (e.g. /fhir/Patient/123); absent means "/" of URL.

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_id", counter)
   table.insert(threads, thread)
end

function init(args)
   paths = {}
   if args[1] ~= nil then
      for line in io.lines(args[1]) do
         if #line > 0 then paths[#paths + 1] = line end
      end
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0))
   if #paths == 0 then
      paths[1] = wrk.path
   end
   requests = {}
   for i = 1, #paths do
      requests[i] = wrk.format("GET", paths[i])
   end
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
