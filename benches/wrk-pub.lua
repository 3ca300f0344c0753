-- wrk script for corqd's HTTP /pub: a 200-byte body per request, keep-alive.
--   wrk -t1 -c4 -d10s -s benches/wrk-pub.lua 'http://127.0.0.1:4151/pub?topic=wrk'
wrk.method = "POST"
wrk.body = string.rep("x", 200)
wrk.headers["Content-Type"] = "application/octet-stream"
