-- One node's sync with the cluster coordinator, atomically: the same rules
-- as huddle::core::cluster::LeaseTable::sync (keep the two in step; the
-- suite in tests/coordinator.rs holds them to the same answers).
--
-- KEYS[1] members: hash node -> "<expires_ms>:<leaving 0|1>"
-- KEYS[2] slots:   hash slot -> "<node>:<epoch>"
-- KEYS[3] meta:    hash generation -> ms, last_epoch -> epoch,
--                  version -> version of the members and the slot table
-- (all three share one hash tag, so this runs on Redis Cluster too)
-- ARGV: node, ttl_ms, leaving, depart, known version, release count, then
--       per release slot and epoch, then the claimed slots.
-- Returns {registered 0|1, {node, leaving, ...}, version, table sent 0|1,
--          {slot, node, epoch, ...}}; the table is sent only when the
-- version is not the one the node named. A renewal touches one member
-- field and reads nothing of the table.
-- Node ids, epochs and versions travel as decimal strings: they may exceed
-- 2^53, which a Lua number cannot hold exactly; they are compared by
-- length then text, which orders decimals without leading zeros.

local function num(s) return string.format('%.0f', s) end
local function greater(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = num(tonumber(t[1]) * 1000000 + tonumber(t[2]))
-- max(last + 1, now_us); last + 1 is exact while values stay below 2^53
-- (microseconds until the year 2255).
local function next_after(last)
  local n = num(tonumber(last) + 1)
  if greater(now_us, n) then return now_us end
  return n
end

local node = ARGV[1]
local ttl = tonumber(ARGV[2])
local leaving = ARGV[3]
local depart = ARGV[4] == '1'
local known = ARGV[5]
local releases = tonumber(ARGV[6])
local changed = false

-- Memberships: drop the expired ones.
local live = {}
local rows = redis.call('HGETALL', KEYS[1])
for i = 1, #rows, 2 do
  local expires, flag = string.match(rows[i + 1], '^(%d+):(%d)$')
  if expires and tonumber(expires) > now_ms then
    live[rows[i]] = flag
  else
    redis.call('HDEL', KEYS[1], rows[i])
    changed = true
  end
end

local generation = tonumber(redis.call('HGET', KEYS[3], 'generation'))
if not generation then
  generation = now_ms
  redis.call('HSET', KEYS[3], 'generation', num(now_ms))
end
local registered = live[node] == nil and 1 or 0

local function owner_of(slot)
  local v = redis.call('HGET', KEYS[2], slot)
  if not v then return nil end
  local o, e = string.match(v, '^(%d+):(%d+)$')
  return {o, e}
end

if depart then
  if live[node] ~= nil then changed = true end
  live[node] = nil
  redis.call('HDEL', KEYS[1], node)
  rows = redis.call('HGETALL', KEYS[2])
  for i = 1, #rows, 2 do
    if string.match(rows[i + 1], '^(%d+):') == node then
      redis.call('HDEL', KEYS[2], rows[i])
      changed = true
    end
  end
else
  if live[node] ~= leaving then changed = true end
  live[node] = leaving
  redis.call('HSET', KEYS[1], node, num(now_ms + ttl) .. ':' .. leaving)
end

local at = 7
for _ = 1, releases do
  local slot, epoch = ARGV[at], ARGV[at + 1]
  at = at + 2
  local o = owner_of(slot)
  if o and o[1] == node and o[2] == epoch then
    redis.call('HDEL', KEYS[2], slot)
    changed = true
  end
end

if not depart and at <= #ARGV then
  local settled = now_ms >= generation + ttl
  local last = redis.call('HGET', KEYS[3], 'last_epoch') or '0'
  for i = at, #ARGV do
    local slot = ARGV[i]
    local o = owner_of(slot)
    local free
    if o == nil then
      free = settled
    else
      free = o[1] ~= node and live[o[1]] == nil
    end
    if free then
      last = next_after(last)
      redis.call('HSET', KEYS[2], slot, node .. ':' .. last)
      changed = true
    end
  end
  redis.call('HSET', KEYS[3], 'last_epoch', last)
end

local version = redis.call('HGET', KEYS[3], 'version')
if changed or not version then
  version = next_after(version or '0')
  redis.call('HSET', KEYS[3], 'version', version)
end

local members = {}
for n, flag in pairs(live) do
  members[#members + 1] = n
  members[#members + 1] = flag
end
local slots = {}
local sent = 0
if version ~= known then
  sent = 1
  rows = redis.call('HGETALL', KEYS[2])
  for i = 1, #rows, 2 do
    local o, e = string.match(rows[i + 1], '^(%d+):(%d+)$')
    slots[#slots + 1] = rows[i]
    slots[#slots + 1] = o
    slots[#slots + 1] = e
  end
end
return {registered, members, version, sent, slots}
