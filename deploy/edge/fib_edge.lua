-- The edge's limiter: the app's per-client budgets, counted in nginx for every
-- API request, cache hits included (docs/edge.md).
--
-- Nothing here decides a rule of its own. The budgets, the "large" rule, the
-- URLs that spend, the counter names and the refusals' bodies come from the
-- policy file that `manage.py edge_policy` writes from the app's settings
-- (fibonacci/edge_policy.py); the count itself is fibonacci/ratelimit/count.lua,
-- the script the app runs too. What this file adds is the reading of a request
-- in nginx's terms: its client's budget key, its query, and the RateLimit
-- fields of the answer; and the way to Redis: the commands it needs, sent for
-- the requests of a worker that arrive together in one call.
--
--   init(policy_file, log_file)  in init_by_lua: load the policy
--   init_worker()                in init_worker_by_lua: the aggregate writer
--   access()                     in access_by_lua, API locations: count, refuse
--   precondition_failed()        content of the 412 nginx answers from its cache
--   log()                        in log_by_lua, API locations: count the aggregated

local semaphore = require("ngx.semaphore")

local byte, concat, find, format, match, sub = string.byte, table.concat, string.find, string.format, string.match, string.sub
local max, tonumber, type, unpack = math.max, tonumber, type, unpack

local _M = {}

local policy
local log_file

local budgets_dict = ngx.shared.fib_budgets -- counters when there is no Redis
local state = ngx.shared.fib_edge_state -- the outage memory, the writer's lock
local logged = ngx.shared.fib_edge_logged -- requests logged one line each, per client and minute
local aggregates = ngx.shared.fib_edge_aggregates -- the others, counted per client and minute

local AGGREGATE_FLUSH_SECONDS = 5

local function hex(bytes)
    return (bytes:gsub(".", function(c)
        return format("%02x", byte(c))
    end))
end

function _M.init(policy_path, log_path)
    policy = dofile(policy_path)
    policy.mark = "counted " .. policy.fingerprint -- X-Fib-Edge (fibonacci/edge.py)
    log_file = log_path
    if policy.counters.store == "redis" then
        policy.counters.sha = hex(ngx.sha1_bin(policy.counters.script))
    end
end

-- The budget an address spends (fibonacci/addresses.py budget_key): IPv4 as
-- nginx writes it, IPv6 as its /64 network, compressed as Python writes it
-- (the last four groups are zero, so the longest run of zeros ends there).
local function budget_key()
    local address = ngx.var.remote_addr
    if not find(address, ":", 1, true) then
        return address
    end
    local binary = ngx.var.binary_remote_addr
    if find(binary, "^%z%z%z%z%z%z%z%z%z%z\255\255") then
        -- An IPv4-mapped address (from a proxy's X-Real-IP) is its IPv4 address.
        return format("%d.%d.%d.%d", byte(binary, 13, 16))
    end
    local groups = {}
    for i = 1, 4 do
        local high, low = byte(binary, 2 * i - 1, 2 * i)
        groups[i] = format("%x", high * 256 + low)
    end
    local last = 4
    while last > 0 and groups[last] == "0" do
        last = last - 1
    end
    return concat(groups, ":", 1, last) .. "::/64"
end

-- fibonacci/params.py parse_decimal: plain ASCII digits for 0 .. maximum.
local function decimal(raw, maximum)
    if type(raw) ~= "string" or not find(raw, "^[0-9]+$") then
        return nil -- absent, repeated (a table), given without "=" (true), or not digits
    end
    local significant = match(raw, "^0*(.-)$")
    if significant == "" then
        significant = "0"
    end
    if #significant > #tostring(maximum) then
        return nil
    end
    local value = tonumber(significant)
    if value > maximum then
        return nil
    end
    return value
end

-- Whether the request spends the budgets (a URL of the sequence or a term)
-- and whether it is large (fibonacci/ratelimit/budgets.py is_large).
local function classify()
    local uri = ngx.var.uri
    if ngx.re.find(uri, policy.sequence_path, "jo") then
        -- More fields than the app reads (DATA_UPLOAD_MAX_NUMBER_FIELDS): it
        -- answers 400, so not large. (nginx skips empty fields, Django counts them.)
        local query, truncated = ngx.req.get_uri_args(policy.max_fields)
        if truncated then
            return true, false
        end
        local count = decimal(query.n, policy.max_n)
        local offset = 0
        if query.offset ~= nil then
            offset = decimal(query.offset, policy.max_n)
        end
        if not count or not offset or offset + count > policy.max_n then
            return true, false
        end
        return true, count > policy.large_counts[offset + 1]
    end
    local term = ngx.re.match(uri, policy.term_path, "jo")
    if term then
        local index = decimal(term[1], policy.max_index)
        return true, index ~= nil and index > policy.large_index
    end
    return false, false
end

-- django-ratelimit's window end for `value` (django_ratelimit/core.py _get_window).
local function window_end(value, period, now)
    if period == 1 then
        return now
    end
    local w = now - now % period + ngx.crc32_long(value) % period
    if w < now then
        return w + period
    end
    return w
end

-- django-ratelimit's counter name (_make_cache_key, with MD5 and every method).
local function counter_name(budget, value, window)
    local rate = format("%d/%ds", budget.quota, budget.window)
    return policy.cache_prefix .. ngx.md5(budget.group .. rate .. value .. format("%d", window))
end

local function count_in_memory(names, ttls)
    local counts = {}
    for i = 1, #names do
        local count, err = budgets_dict:incr(names[i], 1, 0, ttls[i])
        if not count then
            return nil, err
        end
        counts[i] = count
    end
    return counts
end

-- Redis's protocol (RESP), the little the limiter says: a command is an array
-- of bulk strings; a reply is a status (+OK), an error (-ERR ...), or
-- count.lua's array of integers. One string per write, one line per read.
local function command(args)
    local parts = { "*" .. #args .. "\r\n" }
    for i = 1, #args do
        local arg = tostring(args[i])
        parts[i + 1] = "$" .. #arg .. "\r\n" .. arg .. "\r\n"
    end
    return concat(parts)
end

local function reply(socket)
    local line, err = socket:receive()
    if not line then
        return nil, err
    end
    local kind = byte(line)
    if kind == 45 then -- "-": an error
        return nil, sub(line, 2)
    elseif kind == 42 then -- "*": an array of integers (":n")
        local length = tonumber(sub(line, 2))
        if not length or length < 0 then
            return nil, "unexpected reply " .. line
        end
        local counts = {}
        for i = 1, length do
            local item
            item, err = socket:receive()
            if not item then
                return nil, err
            end
            counts[i] = tonumber(sub(item, 2))
        end
        return counts
    elseif kind == 43 then -- "+": a status (+OK)
        return line
    end
    return nil, "unexpected reply " .. line
end

local function call(socket, args)
    local _, err = socket:send(command(args))
    if err then
        return nil, err
    end
    return reply(socket)
end

-- A pooled connection to the counters' Redis, logged in and on their database.
local function connect()
    local counters = policy.counters
    local socket = ngx.socket.tcp()
    socket:settimeout(counters.timeout_ms)
    local ok, err
    if counters.socket then
        ok, err = socket:connect(counters.socket)
    else
        ok, err = socket:connect(counters.host, counters.port)
    end
    if not ok then
        return nil, err
    end
    if socket:getreusedtimes() == 0 then
        if counters.username and counters.password then -- a Redis 6 ACL user
            ok, err = call(socket, { "AUTH", counters.username, counters.password })
        elseif counters.password then
            ok, err = call(socket, { "AUTH", counters.password })
        end
        if ok and counters.db ~= 0 then
            ok, err = call(socket, { "SELECT", counters.db })
        end
        if not ok then
            socket:close()
            return nil, err
        end
    end
    return socket
end

-- count.lua for the counters `names`, in one EVALSHA (EVAL when Redis lost the script).
local function count_in_redis(names, ttls)
    local counters = policy.counters
    local socket, err = connect()
    if not socket then
        return nil, err
    end
    local args = { "EVALSHA", counters.sha, #names }
    for i = 1, #names do
        args[#args + 1] = counters.key_prefix .. names[i]
    end
    for i = 1, #ttls do
        args[#args + 1] = ttls[i]
    end
    local counts
    counts, err = call(socket, args)
    if not counts and err and find(err, "^NOSCRIPT") then
        args[1], args[2] = "EVAL", counters.script
        counts, err = call(socket, args)
    end
    if type(counts) ~= "table" or #counts ~= #names then
        socket:close()
        return nil, err or "unexpected reply"
    end
    socket:setkeepalive(60000, 64)
    return counts
end

-- Requests counted together: while a worker has a batch in flight to Redis,
-- the requests that arrive join the next batch; when the one in flight
-- returns, one of them sends the whole next batch as one EVALSHA (count.lua
-- counts its keys in order, so each request still gets its own count, once).
-- Idle, a request is sent at once; under load, one write, one read and one
-- script call serve a whole batch (as large as the requests one worker holds).
local in_flight = false -- a batch of this worker's is being sent
-- How long a request waits for its batch, in counter timeouts: longer than
-- two calls can take (the one in flight and its own), each of up to nine
-- steps bounded by timeout_ms: connect, AUTH, SELECT and EVALSHA (a write and
-- a read each), and EVAL after NOSCRIPT.
local WAIT_TIMEOUTS = 20
local next_batch -- the requests waiting for the one in flight to return

-- The batch's requests that still wait, and their counters' names and ttls in order.
local function pending(batch)
    local entries = batch.entries
    if #entries == 1 then
        return entries, entries[1].names, entries[1].ttls
    end
    local names, ttls, sent = {}, {}, {}
    for _, entry in ipairs(entries) do
        if not entry.abandoned then
            sent[#sent + 1] = entry
            for i = 1, #entry.names do
                names[#names + 1] = entry.names[i]
                ttls[#ttls + 1] = entry.ttls[i]
            end
        end
    end
    return sent, names, ttls
end

-- Count the batch's requests in one call: each gets its counts or the error.
local function send(batch)
    local sent, names, ttls = pending(batch)
    local counts, err = nil, "counters unavailable"
    -- After a failure of the call in flight the outage is remembered: so would this one fail.
    if not state:get("outage") then
        counts, err = count_in_redis(names, ttls)
    end
    local at = 0
    for _, entry in ipairs(sent) do
        if not counts then
            entry.err = err or "no answer"
        elseif #sent == 1 then
            entry.counts = counts
        else
            entry.counts = { unpack(counts, at + 1, at + #entry.names) }
            at = at + #entry.names
        end
    end
end

local function count_batched(names, ttls)
    local entry = { names = names, ttls = ttls }
    local batch
    if in_flight then
        batch = next_batch
        if not batch then
            local ready = semaphore.new()
            if not ready then
                return count_in_redis(names, ttls) -- no semaphore: not batched, still counted
            end
            batch = { entries = {}, waiting = 0, ready = ready }
            next_batch = batch
        end
        batch.entries[#batch.entries + 1] = entry
        batch.waiting = batch.waiting + 1
        local ok = batch.ready:wait(WAIT_TIMEOUTS * policy.counters.timeout_ms / 1000)
        batch.waiting = batch.waiting - 1
        if not ok then
            entry.abandoned = true -- not counted, or counted and answered too late
            return nil, "waited too long for the counters"
        end
        if batch.done then
            return entry.counts, entry.err
        end
        -- Woken to send its batch (below): the one in flight has returned.
        if next_batch == batch then
            next_batch = nil
        end
    else
        in_flight = true
        batch = { entries = { entry }, waiting = 0 } -- nobody waits on it: no semaphore
    end
    -- Whatever happens in send, the batch's requests are woken and the next
    -- batch is handed on: a worker left "in flight" would make every later
    -- request wait its whole timeout.
    local ok, failure = pcall(send, batch)
    if not ok then
        ngx.log(ngx.ERR, "edge: counting a batch failed: ", failure)
        for _, failed in ipairs(batch.entries) do
            failed.counts, failed.err = nil, failure
        end
    end
    batch.done = true
    if batch.waiting > 0 then
        batch.ready:post(batch.waiting)
    end
    if next_batch and next_batch.waiting > 0 then
        next_batch.ready:post(1) -- one of its requests sends it
    else
        next_batch, in_flight = nil, false
    end
    return entry.counts, entry.err
end

local function refuse(status, body, headers, retry_after)
    ngx.status = status
    for name, value in pairs(headers) do
        ngx.header[name] = value
    end
    ngx.header["Retry-After"] = retry_after
    ngx.header["Content-Length"] = #body
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK) -- the answer is sent; end the request here
end

-- The counters are unreachable: remembered for outage_seconds by every worker
-- (no connection timeout per request) and logged once per interval.
local function outage(err)
    if err and state:add("outage", true, policy.outage_seconds) then
        ngx.log(ngx.ERR, "rate-limit counters unavailable (", err, "); ",
            policy.fail_closed and "refusing requests" or "not limiting",
            " for ", policy.outage_seconds, " s")
    end
    -- The decision, for the edge log's "l" (and the metrics counted from it).
    ngx.var.fib_limit = policy.fail_closed and "fail_closed" or "fail_open"
    if policy.fail_closed then
        local unavailable = policy.unavailable
        return refuse(503, unavailable.body, unavailable.headers, unavailable.retry_after)
    end
end

function _M.access()
    ngx.var.fib_representation = policy.representation_version
    ngx.var.fib_edge_mark = policy.mark
    local now = ngx.time()
    local client = budget_key()
    local minute = now - now % 60
    local each = logged:incr(minute .. "|" .. client, 1, 0, 120)
    -- One line each, or counted in aggregate by log(), with its status.
    ngx.var.fib_log_each = (not each or each <= policy.log_each_per_minute) and "1" or "a"
    if not policy.enabled then
        return
    end
    local spends, large = classify()
    if not spends then
        return
    end
    local names, ttls, windows, spent = {}, {}, {}, {}
    for i, budget in ipairs(policy.budgets) do
        if i == 1 or large then
            local window = window_end(client, budget.window, now)
            spent[#spent + 1] = budget
            windows[#spent] = window
            names[#spent] = counter_name(budget, client, window)
            ttls[#spent] = budget.ttl
        end
    end
    if state:get("outage") then
        return outage(nil)
    end
    local counts, err
    if policy.counters.store == "redis" then
        counts, err = count_batched(names, ttls)
    else
        counts, err = count_in_memory(names, ttls)
    end
    if not counts then
        return outage(err or "no answer")
    end
    -- fibonacci/ratelimit/headers.py's fields, with budgets.budget_usage's numbers.
    local policies, states, wait, refused_by = {}, {}, nil, nil
    for i, budget in ipairs(spent) do
        local count = tonumber(counts[i])
        local reset = max(1, windows[i] - now + 1)
        policies[i] = format('"%s";q=%d;w=%d', budget.name, budget.quota, budget.window)
        states[i] = format('"%s";r=%d;t=%d', budget.name, max(0, budget.quota - count), reset)
        if count > budget.quota then
            wait = max(wait or 0, reset)
            refused_by = refused_by or budget.name
        end
    end
    ngx.var.fib_ratelimit_policy = concat(policies, ", ")
    ngx.var.fib_ratelimit = concat(states, ", ")
    if wait then
        ngx.var.fib_limit = refused_by
        local throttled = policy.throttled
        return refuse(429, format(throttled.body, wait), throttled.headers, wait)
    end
end

-- The app's 412, for a cached answer whose If-Match nginx finds false.
function _M.precondition_failed()
    local failed = policy.precondition_failed
    ngx.status = 412
    for name, value in pairs(failed.headers) do
        ngx.header[name] = value
    end
    ngx.header["Content-Length"] = #failed.body
    ngx.print(failed.body)
end

local function count_aggregate(why)
    local now = ngx.time()
    local key = concat({ now - now % 60, budget_key(), why, ngx.status }, "|")
    local _, err = aggregates:incr(key, 1, 0, 3600)
    if err then
        ngx.log(ngx.WARN, "edge: aggregate not counted: ", err)
    end
end

-- Requests the edge log does not hold one line each ($fib_log_each "a"): the
-- shield's refusals (marked by its error location) and a client's requests
-- past log_each_per_minute (marked by access). Counted here; written by flush.
function _M.log()
    if ngx.var.fib_log_each ~= "a" then
        return
    end
    if ngx.var.limit_req_status == "REJECTED" or ngx.var.limit_conn_status == "REJECTED" then
        count_aggregate("shield")
    else
        count_aggregate("over_rate")
    end
end

local sequence = 0

-- One line per client, minute, reason and status into the edge log, once the
-- minute is over (or now, when this worker is exiting): one write() for all.
local function flush(premature)
    if not state:add("flush_lock", true, 30) then
        return -- another worker is writing
    end
    local now = ngx.time()
    local current = now - now % 60
    local lines, written = {}, {}
    for _, key in ipairs(aggregates:get_keys(0)) do
        local minute, client, why, status = match(key, "^(%d+)|([^|]*)|([%a_]+)|(%d+)$")
        minute = tonumber(minute)
        if minute and (premature or minute < current) then
            local count = aggregates:get(key)
            if count and count > 0 then
                sequence = sequence + 1
                lines[#lines + 1] = format(
                    '{"k":"a","id":"a-%d-%d-%d","minute":%d,"c":"%s","why":"%s","s":%s,"n":%d}\n',
                    ngx.worker.pid(), ngx.now() * 1000, sequence, minute, client, why, status, count)
                written[#written + 1] = { key, count }
            end
        end
    end
    if #lines > 0 then
        local file, err = io.open(log_file, "a")
        if file then
            local text = concat(lines)
            file:setvbuf("full", #text + 1)
            file:write(text)
            file:close()
            for _, entry in ipairs(written) do
                if aggregates:incr(entry[1], -entry[2]) == 0 then
                    aggregates:delete(entry[1])
                end
            end
        else
            ngx.log(ngx.ERR, "edge: cannot write aggregates to ", log_file, ": ", err)
        end
    end
    state:delete("flush_lock")
end

function _M.init_worker()
    local ok, err = ngx.timer.every(AGGREGATE_FLUSH_SECONDS, flush)
    if not ok then
        ngx.log(ngx.ERR, "edge: no aggregate writer: ", err)
    end
end

return _M
