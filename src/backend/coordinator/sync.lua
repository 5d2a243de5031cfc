-- One node's sync with the cluster coordinator, atomically: the same rules
-- as huddle::core::cluster::LeaseTable::sync (keep the two in step; the
-- suite in tests/coordinator.rs holds them to the same answers).
--
-- KEYS[1] members: hash node -> "<expires_ms>:<leaving 0|1>"
-- KEYS[2] slots:   hash slot -> "<node>:<epoch>"
-- KEYS[3] meta:    hash generation -> ms, last_epoch -> epoch
-- (all three share one hash tag, so this runs on Redis Cluster too)
-- ARGV: node, ttl_ms, leaving, depart, release count, then per release
--       slot and epoch, then the claimed slots.
-- Returns {registered 0|1, {node, leaving, ...}, {slot, node, epoch, ...}}.
-- Node ids and epochs travel as decimal strings: both may exceed 2^53,
-- which a Lua number cannot hold exactly; epochs are compared by length
-- then text, which orders decimal strings without leading zeros.

local function num(s) return string.format('%.0f', s) end
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = num(tonumber(t[1]) * 1000000 + tonumber(t[2]))

local node = ARGV[1]
local ttl = tonumber(ARGV[2])
local leaving = ARGV[3]
local depart = ARGV[4] == '1'
local releases = tonumber(ARGV[5])

-- Memberships: drop the expired ones.
local live = {}
local rows = redis.call('HGETALL', KEYS[1])
for i = 1, #rows, 2 do
  local expires, flag = string.match(rows[i + 1], '^(%d+):(%d)$')
  if expires and tonumber(expires) > now_ms then
    live[rows[i]] = flag
  else
    redis.call('HDEL', KEYS[1], rows[i])
  end
end

local generation = tonumber(redis.call('HGET', KEYS[3], 'generation'))
if not generation then
  generation = now_ms
  redis.call('HSET', KEYS[3], 'generation', num(now_ms))
end
local registered = live[node] == nil and 1 or 0

local owners = {}
rows = redis.call('HGETALL', KEYS[2])
for i = 1, #rows, 2 do
  local owner, epoch = string.match(rows[i + 1], '^(%d+):(%d+)$')
  owners[rows[i]] = {owner, epoch}
end

if depart then
  live[node] = nil
  redis.call('HDEL', KEYS[1], node)
  for slot, o in pairs(owners) do
    if o[1] == node then
      owners[slot] = nil
      redis.call('HDEL', KEYS[2], slot)
    end
  end
else
  live[node] = leaving
  redis.call('HSET', KEYS[1], node, num(now_ms + ttl) .. ':' .. leaving)
end

local at = 6
for _ = 1, releases do
  local slot, epoch = ARGV[at], ARGV[at + 1]
  at = at + 2
  local o = owners[slot]
  if o and o[1] == node and o[2] == epoch then
    owners[slot] = nil
    redis.call('HDEL', KEYS[2], slot)
  end
end

if not depart then
  local settled = now_ms >= generation + ttl
  local last = redis.call('HGET', KEYS[3], 'last_epoch') or '0'
  for i = at, #ARGV do
    local slot = ARGV[i]
    local o = owners[slot]
    local free
    if o == nil then
      free = settled
    else
      free = o[1] ~= node and live[o[1]] == nil
    end
    if free then
      -- max(last + 1, now_us); last + 1 is exact while epochs stay below
      -- 2^53 (microseconds until the year 2255).
      local next_epoch = num(tonumber(last) + 1)
      if greater(now_us, next_epoch) then next_epoch = now_us end
      last = next_epoch
      owners[slot] = {node, next_epoch}
      redis.call('HSET', KEYS[2], slot, node .. ':' .. next_epoch)
    end
  end
  redis.call('HSET', KEYS[3], 'last_epoch', last)
end

local members = {}
for n, flag in pairs(live) do
  members[#members + 1] = n
  members[#members + 1] = flag
end
local slots = {}
for slot, o in pairs(owners) do
  slots[#slots + 1] = slot
  slots[#slots + 1] = o[1]
  slots[#slots + 1] = o[2]
end
return {registered, members, slots}
