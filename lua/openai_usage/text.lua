--- Text for people, shared by every output (pure Lua): reading UTF-8,
-- terminal cells, cutting to a width, escaping for XML and HTML, numbers
-- with thousands separators, and the labels of missing values.
-- One rule for bytes that are not UTF-8, everywhere: text is read strictly
-- (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF), and
-- each byte that starts no valid sequence is one U+FFFD, one cell wide. A
-- table measures, cuts and shows the same characters a chart does.
local json = require "openai_usage.json"

local M = {}

local floor, byte, find = math.floor, string.byte, string.find
local concat = table.concat

--- The label of a missing group value, and of the rows summed past a top-N.
M.NONE = "(none)"
M.OTHER = "(other)"

M.REPLACEMENT = "\239\191\189" -- U+FFFD
M.ELLIPSIS = "\226\128\166" -- U+2026

--- Whether a number is an integer (json.is_integer: the subtype from 5.3
-- on, a whole double within 2^53 on 5.1 and LuaJIT).
M.is_integer = json.is_integer

--- A finite number, or nil for anything else (nil, text, NaN, infinities).
function M.finite(v)
  if type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge then
    return v
  end
end

--- Whether a number is whole (an integer, or a float without a fraction).
local function integral(v)
  return M.is_integer(v) or v == floor(v)
end
M.integral = integral

--- Calls visit(code, first, last) for each character of s, with its code
-- point and byte range; a byte that starts no valid sequence is visited
-- alone as U+FFFD with a fourth argument true.
function M.each_char(s, visit)
  local i, n = 1, #s
  while i <= n do
    local b = byte(s, i)
    local len, lo, hi, code = 1, 0x80, 0xBF, b
    if b >= 0xC2 and b <= 0xDF then
      len, code = 2, b - 0xC0
    elseif b == 0xE0 then
      len, lo, code = 3, 0xA0, 0
    elseif b == 0xED then -- no UTF-16 surrogates
      len, hi, code = 3, 0x9F, 0xD
    elseif b >= 0xE1 and b <= 0xEF then
      len, code = 3, b - 0xE0
    elseif b == 0xF0 then
      len, lo, code = 4, 0x90, 0
    elseif b >= 0xF1 and b <= 0xF3 then
      len, code = 4, b - 0xF0
    elseif b == 0xF4 then -- nothing past U+10FFFF
      len, hi, code = 4, 0x8F, 4
    elseif b >= 0x80 then
      len = 0 -- a continuation byte or C0, C1, F5..FF: never a start
    end
    if len > 1 then
      local last = i + len - 1
      local c2 = last <= n and byte(s, i + 1)
      if not c2 or c2 < lo or c2 > hi then
        len = 0
      else
        code = code * 64 + (c2 - 0x80)
        for k = i + 2, last do
          local cb = byte(s, k)
          if cb < 0x80 or cb > 0xBF then
            len = 0
            break
          end
          code = code * 64 + (cb - 0x80)
        end
      end
    end
    if len == 0 then
      visit(0xFFFD, i, i, true)
      i = i + 1
    else
      visit(code, i, i + len - 1)
      i = i + len
    end
  end
end

local NOT_ASCII = "[\128-\255]"

-- s rewritten by character: replace(code, bad, first_byte) gives the
-- text of a character, or nil to keep it. Text with no byte matching
-- needs (a pattern) comes back as it is, without a pass.
local function rewrite(s, needs, replace)
  if not find(s, needs) then
    return s
  end
  local out = {}
  M.each_char(s, function(code, first, last, bad)
    out[#out + 1] = replace(code, bad, byte(s, first)) or s:sub(first, last)
  end)
  return concat(out)
end

local CONTROL_OR_NOT_ASCII = "[%c\128-\255]"

--- s with each byte that is not UTF-8 read as U+FFFD.
function M.valid(s)
  return rewrite(s, NOT_ASCII, function(_, bad)
    return bad and M.REPLACEMENT or nil
  end)
end

--- s as text XML can carry on one line: not UTF-8 and the characters XML
-- forbids (C0 controls, U+FFFE, U+FFFF) become U+FFFD; tabs and line
-- breaks a space. So whatever the data holds, an SVG stays well-formed.
function M.xml(s)
  return rewrite(s, CONTROL_OR_NOT_ASCII, function(code, bad)
    if code == 9 or code == 10 or code == 13 then
      return " "
    elseif bad or code < 0x20 or code == 0x7F or code == 0xFFFE or code == 0xFFFF then
      return M.REPLACEMENT
    end
  end)
end

--- s with nothing a terminal would obey, on one line: C0 controls, DEL
-- and bytes that are not UTF-8 as \xHH, the C1 controls U+0080..U+009F as
-- \u00HH (the C core's usage.printable, for pure-Lua callers).
function M.printable(s)
  return rewrite(s, CONTROL_OR_NOT_ASCII, function(code, bad, first_byte)
    if bad or code < 0x20 or code == 0x7F then
      return ("\\x%02x"):format(first_byte)
    elseif code >= 0x80 and code <= 0x9F then
      return ("\\u%04x"):format(code)
    end
  end)
end

local ENTITY = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- Text made safe for XML and HTML, in content and in quoted attributes.
function M.escape(s)
  return (M.xml(tostring(s)):gsub("[&<>\"']", ENTITY))
end

-- East Asian wide and emoji characters take two terminal cells, combining
-- marks and format characters none.
local WIDE = {
  { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x23E9, 0x23EC }, { 0x23F0, 0x23F0 },
  { 0x23F3, 0x23F3 }, { 0x25FD, 0x25FE }, { 0x2614, 0x2615 }, { 0x2648, 0x2653 }, { 0x267F, 0x267F },
  { 0x2693, 0x2693 }, { 0x26A1, 0x26A1 }, { 0x26AA, 0x26AB }, { 0x26BD, 0x26BE }, { 0x26C4, 0x26C5 },
  { 0x26CE, 0x26CE }, { 0x26D4, 0x26D4 }, { 0x26EA, 0x26EA }, { 0x26F2, 0x26F3 }, { 0x26F5, 0x26F5 },
  { 0x26FA, 0x26FA }, { 0x26FD, 0x26FD }, { 0x2705, 0x2705 }, { 0x270A, 0x270B }, { 0x2728, 0x2728 },
  { 0x274C, 0x274C }, { 0x274E, 0x274E }, { 0x2753, 0x2755 }, { 0x2757, 0x2757 }, { 0x2795, 0x2797 },
  { 0x27B0, 0x27B0 }, { 0x27BF, 0x27BF }, { 0x2B1B, 0x2B1C }, { 0x2B50, 0x2B50 }, { 0x2B55, 0x2B55 },
  { 0x2E80, 0x303E }, { 0x3041, 0x33FF }, { 0x3400, 0x4DBF }, { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF },
  { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF }, { 0xFE10, 0xFE19 }, { 0xFE30, 0xFE6F },
  { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x16FE0, 0x16FE4 }, { 0x17000, 0x18CFF }, { 0x1B000, 0x1B2FF },
  { 0x1F004, 0x1F004 }, { 0x1F0CF, 0x1F0CF }, { 0x1F18E, 0x1F18E }, { 0x1F191, 0x1F19A }, { 0x1F200, 0x1F251 },
  { 0x1F300, 0x1F320 }, { 0x1F32D, 0x1F335 }, { 0x1F337, 0x1F37C }, { 0x1F37E, 0x1F393 }, { 0x1F3A0, 0x1F3CA },
  { 0x1F3CF, 0x1F3D3 }, { 0x1F3E0, 0x1F3F0 }, { 0x1F3F4, 0x1F3F4 }, { 0x1F3F8, 0x1F43E }, { 0x1F440, 0x1F440 },
  { 0x1F442, 0x1F4FC }, { 0x1F4FF, 0x1F53D }, { 0x1F54B, 0x1F54E }, { 0x1F550, 0x1F567 }, { 0x1F57A, 0x1F57A },
  { 0x1F595, 0x1F596 }, { 0x1F5A4, 0x1F5A4 }, { 0x1F5FB, 0x1F64F }, { 0x1F680, 0x1F6C5 }, { 0x1F6CC, 0x1F6CC },
  { 0x1F6D0, 0x1F6D2 }, { 0x1F6D5, 0x1F6D7 }, { 0x1F6EB, 0x1F6EC }, { 0x1F6F4, 0x1F6FC }, { 0x1F7E0, 0x1F7EB },
  { 0x1F90C, 0x1F93A }, { 0x1F93C, 0x1F945 }, { 0x1F947, 0x1F9FF }, { 0x1FA70, 0x1FAFF }, { 0x20000, 0x3FFFD },
}
local ZERO = {
  { 0x0300, 0x036F }, { 0x0483, 0x0489 }, { 0x0591, 0x05BD }, { 0x0610, 0x061A }, { 0x064B, 0x065F },
  { 0x0E31, 0x0E31 }, { 0x0E34, 0x0E3A }, { 0x0E47, 0x0E4E }, { 0x1AB0, 0x1AFF }, { 0x1DC0, 0x1DFF },
  { 0x200B, 0x200F }, { 0x202A, 0x202E }, { 0x2060, 0x2064 }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F },
  { 0xFE20, 0xFE2F }, { 0xFEFF, 0xFEFF }, { 0xE0100, 0xE01EF },
}

local function in_ranges(ranges, c)
  local lo, hi = 1, #ranges
  while lo <= hi do
    local mid = floor((lo + hi) / 2)
    local r = ranges[mid]
    if c < r[1] then
      hi = mid - 1
    elseif c > r[2] then
      lo = mid + 1
    else
      return true
    end
  end
  return false
end

--- Terminal cells of one code point: 0 (controls, combining marks), 1 or
-- 2 (East Asian wide, emoji).
function M.cells(code)
  if code < 0x20 or (code >= 0x7F and code < 0xA0) or in_ranges(ZERO, code) then
    return 0
  end
  return in_ranges(WIDE, code) and 2 or 1
end

--- Terminal cells taken by UTF-8 text.
function M.width(s)
  if not find(s, NOT_ASCII) then
    return #s - select(2, s:gsub("%c", ""))
  end
  local w = 0
  M.each_char(s, function(code)
    w = w + M.cells(code)
  end)
  return w
end

--- s cut by whole characters to fit width, ending with an ellipsis when
-- cut (trailing spaces before it dropped). measure(code) is a character's
-- width (default: terminal cells) and size a factor on it (a font size).
-- Returns the text and whether it was cut.
function M.truncate(s, width, measure, size)
  measure, size = measure or M.cells, size or 1
  local list, widths = {}, {}
  local total = 0
  M.each_char(s, function(code, first, last, bad)
    list[#list + 1] = bad and M.REPLACEMENT or s:sub(first, last)
    widths[#widths + 1] = measure(code)
    total = total + widths[#widths]
  end)
  if total * size <= width then
    return concat(list), false
  end
  local room = width / size - measure(0x2026)
  local used, n = 0, 0
  while n < #list and used + widths[n + 1] <= room do
    n = n + 1
    used = used + widths[n]
  end
  while n > 0 and list[n] == " " do
    n = n - 1
  end
  return concat(list, "", 1, n) .. M.ELLIPSIS, true
end

--- string.format with a fraction, always with a point: printf follows the
-- C locale a script may have set with os.setlocale ("2,5" in de_DE).
function M.decimal(pattern, v)
  return (pattern:format(v):gsub("[^%d%-%+e%.]+", "."))
end

--- "1234567" -> "1,234,567"; a sign and a fraction are kept.
function M.thousands(text)
  local sign, int, rest = text:match "^([-+]?)(%d+)(.*)$"
  if not int then
    return text
  end
  int = int:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return sign .. int .. rest
end

--- A number for people: thousands separators; whole numbers without a
-- fraction, others with decimals digits (default 2); never "-0". For the
-- exact text that reads back as the same number, see json.number.
function M.number(v, decimals)
  local text
  if decimals == nil and integral(v) or decimals == 0 then
    if M.is_integer(v) then
      text = ("%d"):format(v)
    else
      text = ("%.0f"):format(v)
    end
  else
    text = M.decimal("%." .. (decimals or 2) .. "f", v)
  end
  if text:match "^%-[0.]+$" then
    text = text:sub(2)
  end
  return M.thousands(text)
end

--- A percentage for people: "12.5%" with decimals digits (default 1).
function M.percent(v, decimals)
  return M.decimal("%." .. (decimals or 1) .. "f", v) .. "%"
end

--- The text of any field value as a label: nil is M.NONE (or none),
-- whole numbers without a fraction, NaN and infinities spelled the same on
-- every platform.
function M.label(v, none)
  if v == nil then
    return none or M.NONE
  elseif type(v) == "number" then
    if v ~= v then
      return "NaN" -- printf spells it "nan" or "-nan" by platform
    elseif not M.finite(v) then
      return v > 0 and "\226\136\158" or "-\226\136\158"
    elseif integral(v) then
      return M.is_integer(v) and ("%d"):format(v) or ("%.0f"):format(v)
    end
    return M.decimal("%.14g", v)
  end
  return tostring(v)
end

--- Splits a command line into words like a shell would, without expanding
-- anything: blanks separate words, '...' and "..." quote, \ escapes a
-- character outside single quotes. (Neovim's :OpenAIUsage arguments, a
-- profile's key_command.)
function M.words(line)
  local words, word, quote, escaped = {}, nil, nil, false
  for ch in tostring(line or ""):gmatch "." do
    if escaped then
      word, escaped = (word or "") .. ch, false
    elseif quote then
      if ch == quote then
        quote = nil
      elseif ch == "\\" and quote == '"' then
        escaped = true
      else
        word = word .. ch
      end
    elseif ch == "'" or ch == '"' then
      quote, word = ch, word or ""
    elseif ch == "\\" then
      escaped = true
    elseif ch:match "%s" then
      if word then
        words[#words + 1], word = word, nil
      end
    else
      word = (word or "") .. ch
    end
  end
  if word then
    words[#words + 1] = word
  end
  return words
end

return M
