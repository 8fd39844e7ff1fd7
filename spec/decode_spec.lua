-- The decoder: JSON text straight into Lua tables, exact integers, strict
-- grammar, UTF-8 checked, errors with byte offsets, and the usage API's
-- two quirks on the page path.
local usage = require "openai_usage"
local cjson = require "cjson"
local util = require "spec.support.util"

local decode = usage.decode
local has_integers = math.type ~= nil

local function fails(text, pattern, offset)
  local value, err = decode(text)
  assert.is_nil(value)
  assert.are.equal("decode", err.kind)
  if pattern then
    assert.matches(pattern, err.message, 1, true)
  end
  if offset then
    assert.are.equal(offset, err.offset)
  end
  return err
end

local read = util.read

-- The reference-page generator: the shared one ($OPENAI_USAGE_SHARED, else
-- ../shared beside the repository), or the copy bundled for a lone clone.
local function gen_page_path()
  local shared = os.getenv("OPENAI_USAGE_SHARED") or "../shared"
  local path = shared .. "/bench/gen-page.lua"
  local f = io.open(path, "rb")
  if f then
    f:close()
    return path
  end
  return "bench/gen-page.lua"
end

describe("decode", function()
  describe("the seed's example response", function()
    local page = assert(decode(read "spec/fixtures/seed-example.json"))

    it("decodes verbatim into a page", function()
      assert.are.equal("page", page.object)
      assert.is_false(page.has_more)
      assert.are.equal("string", page.next_page)
      assert.are.equal(1, #page.data)
      assert.are.equal("bucket", page.data[1].object)
      assert.are.equal(0, page.data[1].start_time)
      assert.are.equal(0, page.data[1].end_time)
    end)

    it("decodes a result sent as a JSON string into that object", function()
      local r = page.data[1].results[1]
      assert.is_table(r)
      assert.are.same({
        object = "organization.usage.completions.result",
        input_tokens = 5000, output_tokens = 1000, input_cached_tokens = 4000, input_audio_tokens = 300,
        output_audio_tokens = 200, num_model_requests = 5, project_id = "proj_abc", user_id = "user-abc",
        api_key_id = "key_abc", model = "gpt-4o-mini-2024-07-18", batch = false, service_tier = "default",
      }, r)
      if has_integers then
        assert.are.equal("integer", math.type(r.input_tokens))
      end
    end)
  end)

  describe("numbers", function()
    it("keeps integers exact to the int64 limits", function()
      local t = assert(decode "[0, 5000, -17, 9223372036854775807, -9223372036854775808, 9007199254740993]")
      if has_integers then
        assert.are.equal(math.maxinteger, t[4])
        assert.are.equal(math.mininteger, t[5])
        assert.are.equal(9007199254740993, t[6])
        for i = 1, 6 do
          assert.are.equal("integer", math.type(t[i]))
        end
      end
      assert.are.equal(5000, t[2])
      assert.are.equal(-17, t[3])
    end)

    it("on Lua 5.1 and LuaJIT, reads integers beyond 2^53 as the nearest double, as documented", function()
      local t = assert(decode "[9007199254740992, 9007199254740993, 9223372036854775807]")
      assert.are.equal(9007199254740992, t[1])
      if has_integers then
        assert.are.equal("9007199254740993", tostring(t[2]))
        assert.are.equal(math.maxinteger, t[3])
      else
        -- a double holds 53 bits: 2^53 + 1 rounds to 2^53, 2^63 - 1 to 2^63
        assert.are.equal(9007199254740992, t[2])
        assert.are.equal(2 ^ 63, t[3])
      end
    end)

    it("reads -0 as the integer 0", function()
      local t = assert(decode "[-0]")
      assert.are.equal(0, t[1])
      if has_integers then
        assert.are.equal("integer", math.type(t[1]))
      end
    end)

    it("turns integers beyond int64 into floats", function()
      local t = assert(decode "[99999999999999999999, -9223372036854775809]")
      assert.are.equal(1e20, t[1])
      if has_integers then
        assert.are.equal("float", math.type(t[1]))
        assert.are.equal("float", math.type(t[2]))
      end
    end)

    it("reads fractions and exponents as floats", function()
      local t = assert(decode "[1.5, -0.25, 1e3, 2E-2, 1.25e+2, 0.1]")
      assert.are.same({ 1.5, -0.25, 1000.0, 0.02, 125.0, 0.1 }, t)
      if has_integers then
        assert.are.equal("float", math.type(t[3]))
      end
    end)

    it("refuses a number out of a double's range", function()
      fails("1e400", "number out of range", 0)
      fails("[-1e400]", "number out of range", 1)
    end)

    it("reads underflow as 0", function()
      assert.are.equal(0, decode("1e-400"))
    end)

    it("reads numbers written with hundreds of digits", function()
      assert.are.equal(1e200, decode("1" .. ("0"):rep(200)))
      assert.are.equal(1e-301, decode("0." .. ("0"):rep(300) .. "1"))
      assert.are.equal(0.5, decode("0.5" .. ("0"):rep(300)))
      fails("-" .. ("9"):rep(400), "number out of range", 0)
    end)

    it("reads every float to the same double as Lua's own tonumber", function()
      local texts = { "0.1", "0.2", "0.3", "2.2250738585072014e-308", "4.9e-324", "1.7976931348623157e308",
        "9007199254740993.0", "9007199254740992.5", "123456789012345678901234567890.5", "1e22", "1e23",
        "-0.0", "0e10", "5e-324", "3.141592653589793238462643383279", "1.00000000000000011102230246251565" }
      local seed = 12345
      local function random()
        -- Park-Miller: products stay below 2^53, so every Lua draws the same sequence
        seed = seed * 16807 % 2147483647
        return seed
      end
      for _ = 1, 3000 do
        local x = (random() / 2147483647 - 0.5) * 10 ^ (random() % 40 - 20)
        local format = ({ "%.17g", "%.15g", "%.6g", "%.3f", "%.10e", "%.1f" })[random() % 6 + 1]
        texts[#texts + 1] = format:format(x)
      end
      for _, text in ipairs(texts) do
        local value = decode(text)
        local expected = tonumber(text)
        -- compare bit patterns through their exact text: -0.0 and 0 differ
        assert.are.equal(("%.17g"):format(expected), ("%.17g"):format(value), text)
      end
    end)

    for _, bad in ipairs { "01", "+1", ".5", "1.", "1e", "1e+", "-", "NaN", "Infinity", "-Infinity", "0x10" } do
      it("refuses the malformed number " .. bad, function()
        fails(bad)
      end)
    end

    it("does not follow the C locale a script set", function()
      -- a comma-decimal locale built into a private LOCPATH, used by a fresh process
      local dir = os.tmpname()
      os.remove(dir)
      local built = util.execute("mkdir -p " .. dir .. " && localedef -i de_DE -f UTF-8 " .. dir
        .. "/de_DE.UTF-8 2>/dev/null")
      -- make deps installs locales, so this must work
      if not built then
        util.rm_rf(dir)
        error("localedef could not build de_DE.UTF-8 (Debian package locales)")
      end
      local lua = util.suite_lua()
      local p = io.popen(("LOCPATH=%s %s -e 'local name = os.setlocale(\"de_DE.UTF-8\", \"numeric\"); "
        .. "local u = require \"openai_usage\"; local v = u.decode(\"[2.5, 1e-1]\"); "
        .. "io.write(tostring(name), \" \", tostring(v[1] == 2.5 and v[2] == 0.1))' 2>&1"):format(dir, lua))
      local out = p:read "*a"
      p:close()
      util.rm_rf(dir)
      -- setlocale succeeded (de_DE writes 2,5) and the decoder still read 2.5
      assert.are.equal("de_DE.UTF-8 true", out)
    end)
  end)

  describe("strings", function()
    it("reads runs of long strings right: equal, alternating, differing only at the end, escaped", function()
      local a, b = ("a"):rep(50), ("a"):rep(49) .. "b"
      local text = ('["%s","%s","%s","%s","%s","a\\u0061%s",%s]'):format(a, a, b, a, ("x"):rep(41), ("a"):rep(48),
        '{"object":"' .. a .. '","k":"' .. a .. '"}')
      local v = assert(usage.decode(text))
      assert.are.same({ a, a, b, a, ("x"):rep(41), a }, { v[1], v[2], v[3], v[4], v[5], v[6] })
      assert.are.same({ object = a, k = a }, v[7])
    end)

    it("decodes every escape", function()
      assert.are.equal('"\\/\b\f\n\r\t', decode [["\"\\\/\b\f\n\r\t"]])
    end)

    it("decodes \\u escapes and surrogate pairs to UTF-8", function()
      assert.are.equal("é€😀A", decode [["\u00e9\u20AC\ud83d\ude00\u0041"]])
      assert.are.equal("\0", decode [["\u0000"]])
    end)

    it("refuses lone and reversed surrogates", function()
      fails([["\ud83d"]], "lone high surrogate", 1)
      fails([["\ude00"]], "lone low surrogate", 1)
      fails([["\ude00\ud83d"]], "lone low surrogate", 1)
      fails([["\ud83d\u0041"]], "lone high surrogate", 1)
    end)

    it("calls an escape cut off by the end of the input truncation", function()
      for _, text in ipairs { [["\]], [["\u]], [["\u00]], [["\ud83d]], [["\ud83d\]], [["\ud83d\u]],
        [["\ud83d\ude0]] } do
        fails(text, "unexpected end of input (truncated?)", #text)
      end
      fails([["\ud83d\u00e9"]], "lone high surrogate", 1)
    end)

    it("decodes escaped strings longer than the stack buffer", function()
      local plain = ([[a\u00e9\n]]):rep(400)
      local want = ("a\195\169\n"):rep(400)
      assert.are.equal(want, decode('"' .. plain .. '"'))
      assert.are.equal(want .. ("x"):rep(5000), decode('"' .. plain .. ("x"):rep(5000) .. '"'))
      assert.are.same({ [want] = want }, decode('{"' .. plain .. '":"' .. plain .. '"}'))
      fails('"' .. plain .. '\\q"', "invalid escape \\q", #plain + 1)
      fails('"' .. plain, "unexpected end of input", #plain + 1)
    end)

    it("unescapes object keys", function()
      assert.are.same({ Ab = 1, ["\n"] = 2 }, decode [[{"\u0041b":1,"\n":2}]])
    end)

    it("refuses a bad escape", function()
      fails([["a\qb"]], "invalid escape \\q", 2)
      fails([["\u12G4"]], "invalid \\u escape", 1)
    end)

    it("keeps valid UTF-8 as it is", function()
      local text = "ÿ € 𝄞 漢字"
      assert.are.equal(text, decode('"' .. text .. '"'))
    end)

    local invalid = {
      { "lone continuation byte", "\128" },
      { "overlong encoding", "\192\175" },
      { "overlong three-byte", "\224\128\175" },
      { "encoded surrogate", "\237\160\128" },
      { "beyond U+10FFFF", "\244\144\128\128" },
      { "truncated sequence", "\226\130" },
      { "invalid lead byte", "\255" },
    }
    for _, case in ipairs(invalid) do
      it("refuses invalid UTF-8: " .. case[1], function()
        fails('"ab' .. case[2] .. '"', "invalid UTF-8", 3)
        fails('"a\\n' .. case[2] .. '"', "invalid UTF-8", 4)
      end)
    end

    it("calls a UTF-8 sequence cut off by the end of the input truncation", function()
      for _, cut in ipairs { "\195", "\226", "\226\130", "\240\159\152" } do
        fails('"ab' .. cut, "unexpected end of input (truncated?)", 3 + #cut)
      end
      fails('"ab\224\128', "invalid UTF-8", 3)
    end)

    it("refuses raw control characters", function()
      fails('"a\nb"', "control character 0x0A", 2)
      fails('"\\t\1"', "control character 0x01", 3)
    end)
  end)

  describe("structure", function()
    it("leaves a key absent for null, and keeps an array's positions", function()
      local t = assert(decode '{"a":null,"b":1,"c":[1,null,3]}')
      assert.is_nil(t.a)
      assert.are.equal(1, t.b)
      assert.are.equal(1, t.c[1])
      assert.is_nil(t.c[2])
      assert.are.equal(3, t.c[3])
      assert.is_nil(decode "null")
    end)

    it("reads true, false, empty objects and arrays", function()
      assert.are.same({ t = true, f = false, o = {}, a = {} }, decode '{"t":true,"f":false,"o":{},"a":[]}')
    end)

    it("lets the last of duplicate keys win, a last null leaving the key absent", function()
      assert.are.same({ a = 2 }, decode '{"a":1,"a":2}')
      assert.are.same({ b = 1 }, decode '{"a":1,"b":1,"a":null}')
      assert.are.same({ a = 1 }, decode '{"a":null,"a":1}')
    end)

    it("accepts whitespace anywhere between tokens", function()
      assert.are.same({ a = { 1, 2 } }, decode ' \t\r\n{ "a" :\n [ 1 ,\t2 ] }\n ')
    end)

    it("decodes results arrays and objects of any size, whatever the one before held", function()
      -- tables are presized from the previous results array and result object
      local buckets, want = {}, {}
      for b, count in ipairs { 8, 0, 3, 1100, 2, 1, 0, 40 } do
        local results, rows = {}, {}
        for r = 1, count do
          local members, row = {}, {}
          for m = 1, (b + r) % 12 do
            members[#members + 1] = ('"k%d":%d'):format(m, m * r)
            row["k" .. m] = m * r
          end
          results[r] = "{" .. table.concat(members, ",") .. "}"
          rows[r] = row
        end
        buckets[b] = ('{"object":"bucket","start_time":%d,"end_time":%d,"results":[%s]}')
          :format(b, b + 1, table.concat(results, ","))
        want[b] = { object = "bucket", start_time = b, end_time = b + 1, results = rows }
      end
      local page = decode('{"object":"page","data":[' .. table.concat(buckets, ",") .. '],"has_more":false}')
      assert.are.same({ object = "page", data = want, has_more = false }, page)
      assert.are.equal(1100, #page.data[4].results)
      assert.are.equal(0, #page.data[7].results)
    end)

    it("skips runs of whitespace of every length (indentation goes eight bytes at a time)", function()
      local want = { page = { data = { { results = { { n = 1, s = "x" } } } } } }
      for n = 0, 25 do
        for _, unit in ipairs { " ", "\t", "\n", "\r\n", "  \t" } do
          local w = unit:rep(n):sub(1, n)
          local text = ('%s{%s"page"%s:%s{"data":[%s{"results":[{"n"%s:%s1%s,%s"s":"x"}]%s}%s]}%s}%s')
            :format(w, w, w, w, w, w, w, w, w, w, w, w, w)
          assert.are.same(want, decode(text), ("runs of %d bytes of %q"):format(n, unit))
          -- a run of spaces, then a non-space inside the next eight bytes
          assert.are.same({ 1, 2 }, decode("[1," .. (" "):rep(n) .. "\t2]"))
        end
        -- the input ends inside a run: truncated, at its end
        local text = "[1," .. (" "):rep(n)
        fails(text, "unexpected end of input", #text)
        -- a byte that is not whitespace inside a run is an error there
        fails("[1," .. (" "):rep(n) .. "\v2]", "expected a JSON value", 3 + n)
      end
    end)

    it("refuses nesting deeper than the limit, even 10 000 deep", function()
      fails(("["):rep(10000), "nesting deeper than 512", 512)
      fails(("{\"a\":"):rep(600) .. "1" .. ("}"):rep(600), "nesting deeper than 512")
      assert.is_table(decode(("["):rep(512) .. ("]"):rep(512)))
      local _, err = usage.decode(("["):rep(20) .. ("]"):rep(20), 10)
      assert.matches("nesting deeper than 10", err.message, 1, true)
      local _, object = usage.decode("[{}]", 1)
      assert.are.same({ "nesting deeper than 1", 1 }, { object.message, object.offset })
    end)

    it("takes a depth limit from 1 to 4096 and refuses any other", function()
      local _, err = usage.decode(("["):rep(100000), 4096)
      assert.are.equal("nesting deeper than 4096", err.message)
      assert.are.equal(4096, err.offset)
      assert.is_table(usage.decode(("["):rep(4096) .. ("]"):rep(4096), 4096))
      for _, bad in ipairs { 0, -1, 4097, 1000000, 2.5, "deep" } do
        local value, refused = usage.decode("[]", bad)
        assert.is_nil(value)
        assert.are.equal("invalid_argument", refused.kind)
        assert.are.equal("max_depth: expected an integer from 1 to 4096", refused.message)
      end
    end)

    it("decodes objects nested to the 4096 ceiling on every Lua, one stack slot a level", function()
      -- Lua 5.1 and LuaJIT give a C function 8000 stack slots: a key and a
      -- table a level would run out before 4096
      local text = ('{"a":'):rep(2048) .. ('[{"b":'):rep(1024) .. "7" .. ("}]"):rep(1024) .. ("}"):rep(2048)
      local t = assert(usage.decode(text, 4096))
      for _ = 1, 2048 do
        t = t.a
      end
      for _ = 1, 1024 do
        t = t[1].b
      end
      assert.are.equal(7, t)
      local _, err = usage.decode(('{"a":'):rep(4097), 4096)
      assert.are.equal("nesting deeper than 4096", err.message)
      assert.are.equal(5 * 4096, err.offset)
    end)

    it("decodes to the 4096 ceiling on a 256 KiB C stack: containers are not decoded by C recursion", function()
      -- a child process under ulimit -s 256 (musl's threads get 128 KiB):
      -- the recursive decoder this replaced took ~300 bytes of C stack a
      -- level and died with SIGSEGV here
      local script = os.tmpname()
      util.write(script, [[
        local usage = require "openai_usage"
        local n = 4096
        local function depth(t, key)
          local d = 0
          while type(t) == "table" do
            t, d = t[key], d + 1
          end
          return d
        end
        local arrays = assert(usage.decode(("["):rep(n) .. ("]"):rep(n), n))
        local objects = assert(usage.decode(('{"a":'):rep(n - 1) .. "{}" .. ("}"):rep(n - 1), n))
        local page = '{"data":[{"results":[' .. ('{"a":['):rep(n / 2 - 2) .. "7" .. ("]}"):rep(n / 2 - 2) .. "]}]}"
        local deep = assert(usage.decode(page, n)).data[1].results[1]
        for _ = 1, n / 2 - 3 do
          deep = deep.a[1]
        end
        local _, over = usage.decode(("["):rep(n + 1) .. ("]"):rep(n + 1), n)
        print(depth(arrays, 1), depth(objects, "a"), deep.a[1], over.message)
      ]])
      local out, ok = util.popen_run(("sh -c %s"):format(util.q("ulimit -s 256 && exec " .. util.LUA .. " " .. script)))
      os.remove(script)
      assert.is_true(ok, out)
      assert.are.equal("4096\t4096\t7\tnesting deeper than 4096\n", out)
    end)

    it("decodes to the 4096 ceiling on a thread with a 128 KiB stack, as musl gives a new thread", function()
      -- spec/support/decode_thread.c runs ou_decode on such a thread; the
      -- recursive decoder died with SIGSEGV there
      local exe = os.tmpname()
      local build = ("cc -std=c11 -D_GNU_SOURCE -pthread $(pkg-config --cflags lua5.4) -o %s "
        .. "spec/support/decode_thread.c src/decode.c $(pkg-config --libs lua5.4) -lm"):format(util.q(exe))
      local built, ok = util.popen_run(build)
      assert.is_true(ok, built)
      local out, ran = util.popen_run(util.q(exe) .. " 128")
      os.remove(exe)
      assert.is_true(ran, out)
      assert.are.equal("4096\n", out)
    end)

    it("presizes no table that turns out empty: an empty bucket or result costs what an empty array does", function()
      -- buckets were presized for 4 members and results like the one before
      -- them, so 16 MiB of {} held ~1 GB of Lua heap
      local function heap_of(text)
        collectgarbage()
        collectgarbage()
        local before = collectgarbage "count"
        local page = assert(decode(text))
        collectgarbage()
        collectgarbage()
        assert.is_table(page.data)
        return collectgarbage "count" - before
      end
      local n = 20000
      local arrays = heap_of('{"data":[' .. ("[],"):rep(n - 1) .. "[]]}")
      local buckets = heap_of('{"data":[' .. ("{},"):rep(n - 1) .. "{}]}")
      local result = '{"object":"r","a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8}'
      local results = heap_of('{"data":[{"results":[' .. result .. ("," .. "{ }"):rep(n) .. "]}]}")
      local result_arrays = heap_of('{"data":[{"results":[' .. result .. ("," .. "[ ]"):rep(n) .. "]}]}")
      assert.is_true(buckets < arrays * 1.1,
        ("%.0f KB of empty buckets, %.0f KB of empty arrays"):format(buckets, arrays))
      assert.is_true(results < result_arrays * 1.1,
        ("%.0f KB of empty results, %.0f KB of []"):format(results, result_arrays))
    end)

    it("says the Lua stack is exhausted, never crashes, when the caller's stack is nearly full", function()
      -- n extra arguments to core.decode fill n slots of the stack it runs on
      local core = require "openai_usage.core"
      local unpack = table.unpack or unpack
      local filler = {}
      for i = 1, 1100000 do
        filler[i] = false
      end
      -- each try on a fresh coroutine: a stack that overflowed before keeps
      -- a different size for a while
      local function try(n, text)
        local ok, value, err = coroutine.wrap(function()
          return pcall(function()
            return core.decode(text, nil, unpack(filler, 1, n))
          end)
        end)()
        return ok and value ~= nil, err
      end
      -- the fewest extra arguments that make text fail (it decodes with none)
      local function first_failure(text, lo, hi)
        assert.is_true(try(lo, text))
        while hi - lo > 1 do
          local mid = math.floor((lo + hi) / 2)
          if try(mid, text) then
            lo = mid
          else
            hi = mid
          end
        end
        local _, err = try(hi, text)
        return hi, err
      end
      local n, flat = first_failure("0", 0, #filler)
      assert.is_true(n < #filler, "a million arguments decoded")
      assert.are.same({ "decode", "Lua stack exhausted", 0 }, { flat.kind, flat.message, flat.offset })
      -- a deep value runs out part way down, a little earlier
      local deep = ("["):rep(100) .. ("]"):rep(100)
      local _, nested = first_failure(deep, n - 1000, n)
      assert.are.equal("Lua stack exhausted", nested.message)
      assert.is_true(nested.offset > 0 and nested.offset < 100, tostring(nested.offset))
    end)

    it("names the byte offset of each kind of error", function()
      fails("", "empty input", 0)
      fails("   ", "only whitespace", 3)
      fails('{"a" 1}', "expected ':' after object key", 5)
      fails('{"a":1 "b":2}', "expected ',' or '}' after object member", 7)
      fails("[1 2]", "expected ',' or ']' after array element", 3)
      fails("{1:2}", "expected a string key in object", 1)
      fails("[tru]", "invalid literal (expected true)", 1)
      fails("fx", "invalid literal (expected false)", 0)
      fails("[1,]", "expected a JSON value", 3)
      fails("[1] x", "unexpected data after the JSON value", 4)
      fails("\239\187\191[]", "byte order mark", 0)
    end)

    it("calls every prefix of a page truncated, at the prefix's end", function()
      local text = '{"object":"page","data":[{"object":"bucket","start_time":1,"end_time":-2,"results":'
        .. '[{"images":1,"model":"d\\u00e9 \\ud83d\\ude00 ñ 😀","cost":12.5e-1,"batch":true,'
        .. '"user_id":null,"n":[0,null,-0.5]},\n  "{\\"images\\":2}"]}],"has_more":false,"next_page":null}'
      assert.is_table(decode(text))
      local _, empty = decode ""
      assert.are.same({ "decode", "empty input", 0 }, { empty.kind, empty.message, empty.offset })
      for n = 1, #text - 1 do
        local value, err = decode(text:sub(1, n))
        assert.is_nil(value, "prefix of " .. n .. " bytes decoded")
        assert.are.equal("decode", err.kind)
        assert.are.equal("unexpected end of input (truncated?)", err.message, "prefix of " .. n .. " bytes")
        assert.are.equal(n, err.offset, "prefix of " .. n .. " bytes")
      end
    end)

    it("prints an error as one line", function()
      local _, err = decode '{"a":\n\n}'
      assert.are.equal("openai_usage: decode: expected a JSON value", tostring(err))
      assert.are.equal(7, err.offset)
      for _, text in ipairs { '"\n"', '"\\\n"', '{"data":[{"results":["\\n\\u0001"]}]}' } do
        local _, e = decode(text)
        assert.are.equal("decode", e.kind)
        assert.is_nil(tostring(e):find "[\r\n]", text)
      end
    end)
  end)

  describe("usage quirks", function()
    it("stores a bucket's result as results", function()
      local page = assert(decode '{"object":"page","data":[{"object":"bucket","result":[{"images":3}]}]}')
      assert.is_nil(page.data[1].result)
      assert.are.equal(3, page.data[1].results[1].images)
    end)

    it("lets results win over result, in either order", function()
      local a = decode '{"data":[{"results":[{"n":1}],"result":[{"n":2}]}]}'
      local b = decode '{"data":[{"result":[{"n":2}],"results":[{"n":1}]}]}'
      assert.are.equal(1, a.data[1].results[1].n)
      assert.are.equal(1, b.data[1].results[1].n)
    end)

    it("lets results win over result even when it is null", function()
      local a = decode '{"data":[{"result":[{"n":2}],"results":null}]}'
      local b = decode '{"data":[{"results":null,"result":[{"n":2}]}]}'
      assert.is_nil(a.data[1].results)
      assert.is_nil(b.data[1].results)
      assert.is_nil(a.data[1].result)
      local c = decode '{"data":[{"results":[{"n":1}],"result":null}]}'
      assert.are.same({ { n = 1 } }, c.data[1].results)
    end)

    it("reads an empty results list as an empty table", function()
      local page = decode '{"data":[{"object":"bucket","results":[]}]}'
      assert.are.same({}, page.data[1].results)
    end)

    it("applies the quirks only on the page path", function()
      local t = decode '{"other":[{"result":["{\\"a\\":1}"]}],"data":[{"x":{"result":"{}"}}]}'
      assert.are.same({ '{"a":1}' }, t.other[1].result)
      assert.are.equal("{}", t.data[1].x.result)
      assert.are.same({ { "x" } }, decode '[["x"]]')
    end)

    it("refuses a result string that is not JSON, naming both offsets", function()
      local text = '{"data":[{"results":[{"a":1},"{\\"a\\":}"]}]}'
      local err = fails(text, "a result sent as a string is not JSON: expected a JSON value at byte 5 of the string")
      assert.are.equal(29, err.offset)
      fails('{"data":[{"results":["{} x"]}]}', "unexpected data after the JSON value at byte 3")
      fails('{"data":[{"results":[""]}]}', "a result sent as a string is not JSON: empty string at byte 0", 21)
      fails('{"data":[{"results":["{\\"a\\":\\"\\\\q\\"}"]}]}', "invalid escape \\q at byte 6 of the string", 21)
    end)

    it("counts the depth limit across a result string", function()
      local inner = ("["):rep(600) .. ("]"):rep(600)
      local text = '{"data":[{"results":[' .. cjson.encode(inner) .. "]}]}"
      fails(text, "nesting deeper than 512")
    end)
  end)

  describe("the upstream description's examples", function()
    it("decodes every response and result example verbatim", function()
      local p = assert(io.popen "ls fuzz/seeds/decode/upstream-*.json")
      local n = 0
      for path in p:lines() do
        local text = read(path)
        local value, err = decode(text)
        assert.is_table(value, path .. ": " .. tostring(err))
        assert.are.same(cjson.decode(text).object, value.object)
        if value.object == "page" then
          assert.is_table(value.data)
          for _, bucket in ipairs(value.data) do
            assert.is_table(bucket.results, path)
            for _, r in ipairs(bucket.results) do
              assert.is_table(r, path .. ": a result was not decoded into a table")
              assert.is_string(r.object)
            end
          end
        end
        n = n + 1
      end
      p:close()
      assert.is_true(n >= 20, "only " .. n .. " examples")
    end)
  end)

  describe("against lua-cjson", function()
    it("agrees field by field on a generated page, with exact integers", function()
      local lua = util.suite_lua()
      local p = assert(io.popen(("%s %s 20 3"):format(lua, gen_page_path())))
      local text = p:read "*a"
      p:close()
      assert.is_true(#text > 1000, gen_page_path() .. " wrote nothing")
      local ours, theirs = assert(decode(text)), cjson.decode(text)
      local function compare(a, b, path)
        if b == cjson.null then
          assert.is_nil(a, path)
        elseif type(b) == "table" then
          assert.is_table(a, path)
          for k, v in pairs(b) do
            compare(a[k], v, path .. "." .. tostring(k))
          end
          for k in pairs(a) do
            assert.is_not_nil(b[k], path .. "." .. tostring(k) .. " is extra")
          end
        elseif type(b) == "number" then
          assert.are.equal(b, a, path)
          if has_integers then
            assert.are.equal("integer", math.type(a), path)
          end
        else
          assert.are.equal(b, a, path)
        end
      end
      compare(ours, theirs, "page")
      assert.are.equal(20, #ours.data)
    end)
  end)
end)
