-- wrk: every request asks for a window that no earlier request asked for, so
-- that a cache in front never has it. Each thread counts through the 891,000
-- (n, offset) pairs with n from 10 to 99 and offset + n <= 9999 (never large),
-- from a random start seeded by the clock, so threads and runs start far apart.
local seeded = false
local position

function setup(thread)
  if not seeded then
    math.randomseed(os.time())
    seeded = true
  end
  thread:set("start", math.random(0, 890999))
end

function init(args)
  position = tonumber(start) or 0
end

function request()
  position = (position + 1) % 891000
  local n = 10 + math.floor(position / 9900)
  local offset = position % 9900
  return wrk.format("GET", "/api/v1/fibonacci/?n=" .. n .. "&offset=" .. offset)
end
