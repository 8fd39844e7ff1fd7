--- Report steps over usage rows (pure Lua). Each step takes rows and gives
-- rows, so steps compose:
--   local rows = report.rows(client:results("images", params))
--   print(report.format(report.top(report.group(rows, "model,size"), 5, "images"), "table"))
-- A row is a flat table: a result of any usage endpoint (or costs), with its
-- bucket's start_time and end_time. A list of rows may carry .columns, the
-- order its fields are shown in; every step keeps it up to date.
local time = require "openai_usage.time"
local format = require "openai_usage.format"
local errors = require "openai_usage.errors"
local text = require "openai_usage.text"

local M = {}

M.NONE = text.NONE
M.OTHER = text.OTHER
M.time = time.parse
M.width = time.width

local floor = math.floor
local TIME_FIELD = { start_time = true, end_time = true }

-- Steps are given bad arguments by programs, not by the API: they raise,
-- naming the step, which nil, err would lose in a chain of calls.
local raise = errors.invalid

local function list(names, what)
  if names == nil then
    return nil
  end
  if type(names) == "string" then
    local out = {}
    for name in names:gmatch "[^,%s]+" do
      out[#out + 1] = name
    end
    return out
  end
  if type(names) ~= "table" then
    raise(("%s: expected a list of field names or \"a,b\", got a %s"):format(what, type(names)))
  end
  return names
end

local function with_columns(rows, columns)
  rows.columns = columns
  return rows
end

local function is_number(v)
  return type(v) == "number"
end

-- Lifts a nested amount such as costs' { value = 0.06, currency = "usd" }
-- into the row: amount = 0.06, currency = "usd". Any object with a numeric
-- value is read that way; no endpoint is named here.
local function flat(row)
  for k, v in pairs(row) do
    if type(v) == "table" and is_number(v.value) then
      row[k] = v.value
      for sub, sv in pairs(v) do
        if sub ~= "value" and type(sv) ~= "table" and row[sub] == nil then
          row[sub] = sv
        end
      end
    end
  end
  return row
end

--- A list of flat rows from a list or an iterator (client:results(...),
-- client:buckets(...) yields buckets: give results instead).
function M.rows(source)
  local out = {}
  if type(source) == "function" then
    for row in source do
      out[#out + 1] = flat(row)
    end
  elseif type(source) == "table" then
    for i = 1, #source do
      out[i] = flat(source[i])
    end
    out.columns = source.columns
  else
    raise("rows: expected a list of rows or an iterator, got a " .. type(source))
  end
  return out
end

-- The fields of rows with a value that keep(field, value) accepts, sorted.
local function fields_where(rows, keep)
  local seen, names = {}, {}
  for _, row in ipairs(rows) do
    for k, v in pairs(row) do
      if not seen[k] and keep(k, v) then
        seen[k] = true
        names[#names + 1] = k
      end
    end
  end
  table.sort(names)
  return names
end

--- The numeric fields of rows, start_time and end_time aside, sorted.
function M.numeric_fields(rows)
  if rows.columns then
    local out = {}
    for _, c in ipairs(rows.columns) do
      if not TIME_FIELD[c] then
        for _, row in ipairs(rows) do
          if row[c] ~= nil then
            if is_number(row[c]) then
              out[#out + 1] = c
            end
            break
          end
        end
      end
    end
    return out
  end
  return fields_where(rows, function(k, v)
    return is_number(v) and not TIME_FIELD[k]
  end)
end

--- The text fields of rows ("object" aside), sorted.
function M.label_fields(rows)
  return fields_where(rows, function(k, v)
    return type(v) ~= "number" and k ~= "object"
  end)
end

local function concat(a, b)
  local out = {}
  for _, v in ipairs(a) do
    out[#out + 1] = v
  end
  for _, v in ipairs(b) do
    out[#out + 1] = v
  end
  return out
end

local function zero_sums(sums)
  local row = {}
  for _, f in ipairs(sums) do
    row[f] = 0
  end
  return row
end

local function add(into, row, sums)
  for _, f in ipairs(sums) do
    local v = row[f]
    if is_number(v) then
      into[f] = into[f] + v
    end
  end
end

-- Fields that measure a level, not a count: summing them over time means
-- nothing. Over time, group keeps the latest bucket's value (per group:
-- the sum of the levels of that bucket's rows). Written here once: the
-- OpenAPI description says "usage in bytes" and no more.
M.LEVEL = { usage_bytes = true }

-- Adds row's figure v of field f into acc: a sum, except for a level
-- field, which takes the rows of the latest start_time (latest[f] holds it).
local function add_figure(acc, f, v, row, levels, latest)
  if levels[f] then
    local t = is_number(row.start_time) and row.start_time or 0
    local at = latest[f]
    if at == nil or t > at then
      latest[f], acc[f] = t, v
    elseif t == at then
      acc[f] = acc[f] + v
    end
  else
    acc[f] = (acc[f] or 0) + v
  end
end

-- Combines the rows of one group: sums, except level fields, which take
-- the rows of the latest start_time.
local function fold(g, row, sums, levels, latest)
  for _, f in ipairs(sums) do
    local v = row[f]
    if is_number(v) then
      add_figure(g, f, v, row, levels, latest)
    end
  end
end

-- A row's value of a group field, none when it has none.
local function group_value(row, f, none)
  local v = row[f]
  if v == nil then
    return none
  end
  return v
end

local function key_of(row, by, none)
  local parts = {}
  for i, f in ipairs(by) do
    local v = group_value(row, f, none)
    parts[i] = type(v) .. ":" .. tostring(v)
  end
  return table.concat(parts, "\0")
end

-- The level fields of a grouping by by: none when it groups by start_time
-- (one bucket a group: every field adds up), else opts.levels or M.LEVEL.
local function levels_of(by, opts)
  for _, f in ipairs(by) do
    if f == "start_time" then
      return {}
    end
  end
  return opts.levels or M.LEVEL
end

--- Groups rows by fields (a list or "a,b") and sums numeric fields (a list;
-- default every numeric field). A level field (M.LEVEL, or opts.levels, a
-- set of names) takes its latest bucket's value instead of a sum, unless
-- start_time is one of the group fields. A missing group value reads as
-- "(none)", or opts.none. opts.count names a field that gets each group's
-- row count. Groups keep the order of their first row.
function M.group(rows, by, sums, opts)
  opts = opts or {}
  by = list(by, "group: by") or {}
  sums = list(sums, "group: sums") or M.numeric_fields(rows)
  local none = opts.none or M.NONE
  local levels = levels_of(by, opts)
  local latest = {}
  local out, index = {}, {}
  for _, row in ipairs(rows) do
    local key = key_of(row, by, none)
    local g = index[key]
    if not g then
      g = zero_sums(sums)
      for _, f in ipairs(by) do
        g[f] = group_value(row, f, none)
      end
      if opts.count then
        g[opts.count] = 0
      end
      index[key] = g
      latest[g] = {}
      out[#out + 1] = g
    end
    fold(g, row, sums, levels, latest[g])
    if opts.count then
      g[opts.count] = g[opts.count] + 1
    end
  end
  local columns = concat(by, sums)
  if opts.count then
    columns[#columns + 1] = opts.count
  end
  return with_columns(out, columns)
end

--- One row holding the sums of numeric fields over all rows.
function M.totals(rows, sums)
  sums = list(sums, "totals: sums") or M.numeric_fields(rows)
  local total = zero_sums(sums)
  for _, row in ipairs(rows) do
    add(total, row, sums)
  end
  return with_columns({ total }, sums)
end

local function copy_columns(rows)
  if not rows.columns then
    return nil
  end
  return concat(rows.columns, {})
end

-- Compares two values of one field: numbers as numbers, anything else as
-- text; nil and NaN (an unknown figure) sort last.
local function less(a, b)
  if a ~= a then
    a = nil
  end
  if b ~= b then
    b = nil
  end
  if a == nil or b == nil then
    return a ~= nil and b == nil
  end
  if is_number(a) and is_number(b) then
    return a < b
  end
  return tostring(a) < tostring(b)
end

--- Sorts rows (a new list; the sort is stable). spec: "-images,model"
-- (minus for descending), a list of such names, or a less(a, b) function.
function M.sort(rows, spec)
  local out = {}
  for i, row in ipairs(rows) do
    out[i] = row
  end
  local position = {}
  for i, row in ipairs(rows) do
    position[row] = position[row] or i
  end
  local before = spec
  if type(spec) ~= "function" then
    local keys = {}
    for i, name in ipairs(list(spec, "sort") or {}) do
      local desc, field = name:match "^(%-?)(.+)$"
      keys[i] = { field = field, desc = desc == "-" }
    end
    before = function(a, b)
      for _, k in ipairs(keys) do
        local x, y = a[k.field], b[k.field]
        if x ~= y then
          if k.desc then
            if less(y, x) then
              return true
            elseif less(x, y) then
              return false
            end
          else
            if less(x, y) then
              return true
            elseif less(y, x) then
              return false
            end
          end
        end
      end
      return false
    end
  end
  table.sort(out, function(a, b)
    if before(a, b) then
      return true
    elseif before(b, a) then
      return false
    end
    return position[a] < position[b]
  end)
  return with_columns(out, copy_columns(rows))
end

--- The n rows largest in field, then one row summing the rest (its text
-- fields read "(other)", or opts.other), when there is a rest.
function M.top(rows, n, field, opts)
  opts = opts or {}
  if type(n) ~= "number" or n < 0 then
    raise("top: n must be a number >= 0")
  end
  if type(field) ~= "string" then
    raise("top: name the numeric field to rank by")
  end
  local sorted = M.sort(rows, "-" .. field)
  if #sorted <= n then
    return sorted
  end
  local sums = M.numeric_fields(rows)
  local other = zero_sums(sums)
  local labels = rows.columns and {} or M.label_fields(rows)
  if rows.columns then
    for _, c in ipairs(rows.columns) do
      local numeric = false
      for _, f in ipairs(sums) do
        numeric = numeric or f == c
      end
      if not numeric then
        labels[#labels + 1] = c
      end
    end
  end
  for _, f in ipairs(labels) do
    other[f] = opts.other or M.OTHER
  end
  local out = {}
  for i = 1, #sorted do
    if i <= n then
      out[i] = sorted[i]
    else
      add(other, sorted[i], sums)
    end
  end
  out[#out + 1] = other
  return with_columns(out, copy_columns(rows))
end

--- Adds each row's share of the total of field, in percent, as field
-- `as` (default field .. "_share"). A zero total gives shares of 0.
function M.share(rows, field, as)
  as = as or field .. "_share"
  local total = 0
  for _, row in ipairs(rows) do
    if is_number(row[field]) then
      total = total + row[field]
    end
  end
  local out = {}
  for i, row in ipairs(rows) do
    local copy = {}
    for k, v in pairs(row) do
      copy[k] = v
    end
    copy[as] = total ~= 0 and 100 * (row[field] or 0) / total or 0.0
    out[i] = copy
  end
  local columns = copy_columns(rows)
  if columns then
    columns[#columns + 1] = as
  end
  return with_columns(out, columns)
end

--- Keeps the rows a predicate accepts. pred: function(row) -> boolean, or a
-- table of field = value or field = { allowed values }.
function M.filter(rows, pred)
  local accept = pred
  if type(pred) == "table" then
    accept = function(row)
      for field, want in pairs(pred) do
        local v = row[field]
        if type(want) == "table" then
          local found = false
          for _, w in ipairs(want) do
            found = found or v == w
          end
          if not found then
            return false
          end
        elseif v ~= want then
          return false
        end
      end
      return true
    end
  elseif type(pred) ~= "function" then
    raise("filter: expected a function or a table of field = value")
  end
  local out = {}
  for _, row in ipairs(rows) do
    if accept(row) then
      out[#out + 1] = row
    end
  end
  return with_columns(out, copy_columns(rows))
end

--- Pivots rows into a table: one row per value of spec.row (default
-- start_time), one column per value of spec.column holding the sum of
-- spec.value; empty cells are 0. Columns are ordered by their totals,
-- largest first. Gives rows; the columns are also its .columns.
function M.pivot(rows, spec)
  spec = spec or {}
  local row_field, column_field, value = spec.row or "start_time", spec.column, spec.value
  if type(column_field) ~= "string" or type(value) ~= "string" then
    raise "pivot: give spec.column (the field whose values become columns) and spec.value (a numeric field)"
  end
  local none = spec.none or M.NONE
  local out, index, totals, names = {}, {}, {}, {}
  for _, row in ipairs(rows) do
    local r = row[row_field]
    if r == nil then
      r = none
    end
    local c = row[column_field]
    if c == nil then
      c = none
    end
    c = tostring(c)
    if totals[c] == nil then
      totals[c] = 0
      names[#names + 1] = c
    end
    local target = index[r]
    if not target then
      target = { [row_field] = r }
      index[r] = target
      out[#out + 1] = target
    end
    local v = is_number(row[value]) and row[value] or 0
    target[c] = (target[c] or 0) + v
    totals[c] = totals[c] + v
  end
  table.sort(names, function(a, b)
    if totals[a] ~= totals[b] then
      return totals[a] > totals[b]
    end
    return a < b
  end)
  for _, target in ipairs(out) do
    for _, c in ipairs(names) do
      target[c] = target[c] or 0
    end
  end
  out = M.sort(out, row_field)
  return with_columns(out, concat({ row_field }, names))
end

-- read(value) or raise naming the step's argument (time.width, time.parse).
local function checked(read, value, what)
  local v, err = read(value)
  if not v then
    raise(what .. ": " .. err)
  end
  return v
end

local function width_of(value, what)
  return checked(time.width, value, what)
end

local function time_of(value, what)
  return checked(time.parse, value, what)
end

-- The range of a series: spec.start and spec.stop, or for either not
-- given, the first row's bucket start or the last row's bucket end.
local function series_range(rows, spec, w)
  local start, stop = spec.start, spec.stop
  if start == nil or stop == nil then
    for _, row in ipairs(rows) do
      local t = row.start_time
      if is_number(t) then
        if spec.start == nil and (start == nil or t < start) then
          start = t
        end
        if spec.stop == nil and (stop == nil or t + w > stop) then
          stop = t + w
        end
      end
    end
  end
  return start, stop
end

--- A time series with no holes: one row per bucket of spec.width (default
-- one day) from spec.start to spec.stop (exclusive) and per group of
-- spec.by (fields; optional), summing spec.value (a field or list; default
-- every numeric field). Buckets with no row read 0. Rows outside the range
-- are left out. Buckets are aligned on start.
function M.series(rows, spec)
  spec = spec or {}
  local w = width_of(spec.width or 86400, "series: width")
  local by = list(spec.by, "series: by") or {}
  local sums = list(spec.value, "series: value") or M.numeric_fields(rows)
  local start, stop = series_range(rows, spec, w)
  if start == nil then
    return with_columns({}, concat(concat({ "start_time", "end_time" }, by), sums))
  end
  start, stop = time_of(start, "series: start"), time_of(stop, "series: stop")
  local none = spec.none or M.NONE
  local groups, group_index = {}, {}
  local cells = {}
  for _, row in ipairs(rows) do
    local t = row.start_time
    if is_number(t) and t >= start and t < stop then
      local key = key_of(row, by, none)
      if not group_index[key] then
        local g = {}
        for _, f in ipairs(by) do
          g[f] = group_value(row, f, none)
        end
        group_index[key] = g
        groups[#groups + 1] = key
      end
      local b = start + floor((t - start) / w) * w
      local cell_key = b .. "\0" .. key
      local cell = cells[cell_key]
      if not cell then
        cell = zero_sums(sums)
        cells[cell_key] = cell
      end
      add(cell, row, sums)
    end
  end
  if #groups == 0 and #by == 0 then
    groups[1] = key_of({}, by, none)
    group_index[groups[1]] = {}
  end
  local out = {}
  for b = start, stop - 1, w do
    for _, key in ipairs(groups) do
      local row = { start_time = b, end_time = b + w }
      for f, v in pairs(group_index[key]) do
        row[f] = v
      end
      local cell = cells[b .. "\0" .. key] or zero_sums(sums)
      for _, f in ipairs(sums) do
        row[f] = cell[f]
      end
      out[#out + 1] = row
    end
  end
  return with_columns(out, concat(concat({ "start_time", "end_time" }, by), sums))
end

--- Re-buckets rows to a wider width ("1h", "1d" or seconds), in UTC or on
-- local days of a fixed offset (opts.offset, seconds east of UTC: 3600 for
-- UTC+1), summing numeric fields per bucket and per value of the rows'
-- text fields. A bucket narrower than the rows' own is refused.
function M.rebucket(rows, width, opts)
  opts = opts or {}
  local w = width_of(width, "rebucket: width")
  local offset = opts.offset or 0
  if type(offset) ~= "number" or offset ~= floor(offset) or offset <= -86400 or offset >= 86400 then
    raise "rebucket: offset must be whole seconds east of UTC, within a day"
  end
  local labels = {}
  local sums = M.numeric_fields(rows)
  if rows.columns then
    local numeric = {}
    for _, f in ipairs(sums) do
      numeric[f] = true
    end
    for _, c in ipairs(rows.columns) do
      if not numeric[c] and not TIME_FIELD[c] then
        labels[#labels + 1] = c
      end
    end
  else
    labels = M.label_fields(rows)
  end
  local out, index = {}, {}
  for _, row in ipairs(rows) do
    local t = row.start_time
    if not is_number(t) then
      raise "rebucket: every row needs a start_time"
    end
    if is_number(row.end_time) and row.end_time - t > w then
      raise(("rebucket: rows are %d s wide; cannot split them into %d s buckets"):format(row.end_time - t, w))
    end
    local b = floor((t + offset) / w) * w - offset
    if math.tointeger then
      b = math.tointeger(b) or b
    end
    local key = b .. "\0" .. key_of(row, labels, M.NONE)
    local g = index[key]
    if not g then
      g = zero_sums(sums)
      g.start_time, g.end_time = b, b + w
      for _, f in ipairs(labels) do
        g[f] = row[f]
      end
      index[key] = g
      out[#out + 1] = g
    end
    add(g, row, sums)
  end
  out = M.sort(out, "start_time")
  return with_columns(out, concat(concat({ "start_time", "end_time" }, labels), sums))
end

-- Folds: the same steps over rows that arrive one at a time (a walk's
-- pages), keeping per-group state instead of every row. fold:add(row) takes
-- a flat row; fold:result(sums) gives what the list step would give for the
-- rows added, summing sums (a list; default the numeric fields seen). A
-- fold sums every numeric field it meets, so sums may be chosen at the end.

-- Adds row's numeric fields into acc, noting each in seen; levels take
-- the latest bucket's.
local function fold_all(acc, row, levels, latest, seen)
  for f, v in pairs(row) do
    if type(v) == "number" then
      seen[f] = true
      add_figure(acc, f, v, row, levels, latest)
    end
  end
end

local function seen_numeric(seen)
  local names = {}
  for f in pairs(seen) do
    if not TIME_FIELD[f] then
      names[#names + 1] = f
    end
  end
  table.sort(names)
  return names
end

-- The group of row in a tree keyed by its group values, one level per
-- field (strings as themselves, other values by type and text, as key_of
-- tells them apart), so a row's group is found without building a key.
local OTHERS = {}
local function find_group(tree, row, by, none)
  local node = tree
  for i = 1, #by do
    local v = row[by[i]]
    if v == nil then
      v = none
    end
    if type(v) ~= "string" then -- under a key no string is
      local others = node[OTHERS]
      if not others then
        others = {}
        node[OTHERS] = others
      end
      node, v = others, type(v) .. ":" .. tostring(v)
    end
    local next_node = node[v]
    if not next_node then
      next_node = {}
      node[v] = next_node
    end
    node = next_node
  end
  return node
end

local GroupFold = {}
GroupFold.__index = GroupFold

--- The fold of M.group(rows, by, sums, opts): fold:add(row), then
-- fold:result(sums) (opts.count as group's).
function M.group_fold(by, opts)
  opts = opts or {}
  by = list(by, "group: by") or {}
  local levels = levels_of(by, opts)
  return setmetatable({ by = by, opts = opts, none = opts.none or M.NONE, levels = levels, groups = {}, index = {},
    seen = {} }, GroupFold)
end

function GroupFold:add(row)
  local node = find_group(self.index, row, self.by, self.none)
  local g = node[true]
  if not g then
    g = { labels = {}, acc = {}, latest = {}, count = 0 }
    for _, f in ipairs(self.by) do
      g.labels[f] = group_value(row, f, self.none)
    end
    node[true] = g
    self.groups[#self.groups + 1] = g
  end
  fold_all(g.acc, row, self.levels, g.latest, self.seen)
  g.count = g.count + 1
end

function GroupFold:result(sums)
  sums = list(sums, "group: sums") or seen_numeric(self.seen)
  local count = self.opts.count
  local out = {}
  for i, g in ipairs(self.groups) do
    local row = {}
    for _, f in ipairs(sums) do
      row[f] = g.acc[f] or 0
    end
    for _, f in ipairs(self.by) do
      row[f] = g.labels[f]
    end
    if count then
      row[count] = g.count
    end
    out[i] = row
  end
  local columns = concat(self.by, sums)
  if count then
    columns[#columns + 1] = count
  end
  return with_columns(out, columns)
end

local NO_LEVELS = {}
local SeriesFold = {}
SeriesFold.__index = SeriesFold

--- The fold of M.series(rows, spec): spec.start and spec.stop are needed
-- here (a fold cannot wait for the last row to learn the range).
function M.series_fold(spec)
  local w = width_of(spec.width or 86400, "series: width")
  if spec.start == nil or spec.stop == nil then
    raise "series_fold: needs spec.start and spec.stop"
  end
  return setmetatable({ w = w, by = list(spec.by, "series: by") or {}, value = spec.value,
    start = time_of(spec.start, "series: start"), stop = time_of(spec.stop, "series: stop"),
    none = spec.none or M.NONE, groups = {}, group_index = {}, cells = {}, seen = {} }, SeriesFold)
end

function SeriesFold:add(row)
  local t = row.start_time
  if is_number(t) and t >= self.start and t < self.stop then
    local key = key_of(row, self.by, self.none)
    if not self.group_index[key] then
      local g = {}
      for _, f in ipairs(self.by) do
        g[f] = group_value(row, f, self.none)
      end
      self.group_index[key] = g
      self.groups[#self.groups + 1] = key
    end
    local b = self.start + floor((t - self.start) / self.w) * self.w
    local cell_key = b .. "\0" .. key
    local cell = self.cells[cell_key]
    if not cell then
      cell = {}
      self.cells[cell_key] = cell
    end
    fold_all(cell, row, NO_LEVELS, nil, self.seen)
  else
    for f, v in pairs(row) do
      if type(v) == "number" then
        self.seen[f] = true
      end
    end
  end
end

function SeriesFold:result(sums)
  sums = list(sums or self.value, "series: value") or seen_numeric(self.seen)
  local groups, group_index, by = self.groups, self.group_index, self.by
  if #groups == 0 and #by == 0 then
    groups = { key_of({}, by, self.none) }
    group_index = { [groups[1]] = {} }
  end
  local out = {}
  for b = self.start, self.stop - 1, self.w do
    for _, key in ipairs(groups) do
      local row = { start_time = b, end_time = b + self.w }
      for f, v in pairs(group_index[key]) do
        row[f] = v
      end
      local cell = self.cells[b .. "\0" .. key] or {}
      for _, f in ipairs(sums) do
        row[f] = cell[f] or 0
      end
      out[#out + 1] = row
    end
  end
  return with_columns(out, concat(concat({ "start_time", "end_time" }, by), sums))
end

local TotalsFold = {}
TotalsFold.__index = TotalsFold

--- The fold of M.totals(rows, sums): one row, zeros when no row came.
function M.totals_fold()
  return setmetatable({ group = M.group_fold({}, { levels = {} }) }, TotalsFold)
end

function TotalsFold:add(row)
  self.group:add(row)
end

function TotalsFold:result(sums)
  sums = list(sums, "totals: sums") or seen_numeric(self.group.seen)
  local rows = self.group:result(sums)
  return with_columns({ rows[1] or zero_sums(sums) }, sums)
end

--- Text of rows in a format: table, md, csv, json, jsonl, svg or html.
-- See openai_usage.format for the options.
function M.format(rows, name, opts)
  return format.render(rows, name, opts)
end

M.formats = format.NAMES

return M
