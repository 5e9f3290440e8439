// The shared-memory mark ring: round trips, wrap-around, a full ring, a reader taking over a ring
// another drained in part, JSON as Python writes it, and a writer that is hostile (every header
// field and frame it controls). The writer/reader race runs under TSan in CI.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>

#include "check.hpp"
#include "greenprobe/mark_ring.hpp"

using namespace greenprobe::markring;

namespace {

std::string encode(std::int64_t start, std::int64_t end, std::string_view label, int n_int_attrs = 0) {
    MarkEncoder e;
    if (!e.begin(start, end, 7, true, label)) return {};
    for (int i = 0; i < n_int_attrs; ++i) e.attr_int("a" + std::to_string(i), i);
    return e.bytes();
}

std::string json_of(const MarkColumns& c, std::size_t i) {
    return c.attrs_data.substr(static_cast<std::size_t>(c.attrs_offsets[i]),
                               static_cast<std::size_t>(c.attrs_offsets[i + 1] - c.attrs_offsets[i]));
}

std::string dbl(double v) {
    std::string s;
    append_json_double(s, v);
    return s;
}

std::string str(std::string_view v) {
    std::string s;
    return append_json_string(s, v) ? s : "<invalid>";
}

Header* header_of(int fd) {
    return static_cast<Header*>(mmap(nullptr, kHeaderBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
}

}  // namespace

TEST(round_trip_with_every_attribute_type) {
    RingWriter w(1 << 14);
    MarkEncoder e;
    REQUIRE(e.begin(100, 250, 42, false, "infer"));
    CHECK(e.attr_str("runtime", "torch \"2\"\n"));
    CHECK(e.attr_int("batch", -64));
    CHECK(e.attr_float("lr", 0.5));
    CHECK(e.attr_bool("warm", true));
    CHECK(e.attr_none("note"));
    CHECK(w.push(e.bytes()));
    REQUIRE(e.begin(300, 300, 43, true, "infer"));
    CHECK(w.push(e.bytes()));
    REQUIRE(e.begin(400, 500, 44, true, "load"));
    CHECK(e.attr_int("pid", 1));  // a client cannot say which process it is
    CHECK(e.attr_str("x", "y"));
    CHECK(w.push(e.bytes()));
    RingReader r(dup(w.fd()));
    CHECK(r.pending_bytes() > 0);
    MarkColumns c = r.drain(4242);
    REQUIRE(c.size() == 3);
    CHECK(c.labels.size() == 2 && c.labels[0] == "infer" && c.labels[1] == "load");
    CHECK(c.label_index[0] == 0 && c.label_index[1] == 0 && c.label_index[2] == 1);
    CHECK(c.start_ns[0] == 100 && c.end_ns[0] == 250 && c.thread_id[0] == 42 && c.ok[0] == 0 && c.ok[1] == 1);
    CHECK(json_of(c, 0) == R"({"runtime":"torch \"2\"\n","batch":-64,"lr":0.5,"warm":true,"note":null,"pid":4242})");
    CHECK(json_of(c, 1) == R"({"pid":4242})");
    CHECK(json_of(c, 2) == R"({"pid":4242,"x":"y"})");
    CHECK(c.attr_names.size() == 7);
    CHECK(c.refused == 0);
    // taken, not yet durable: the client's flush waits, and the bytes stay the client's
    CHECK(w.drained() == 0 && w.pending_bytes() > 0 && r.pending_bytes() == 0);
    CHECK(r.release(c.end_position));
    r.commit(3);
    CHECK(w.drained() == 3 && w.refused() == 0 && w.pending_bytes() == 0);
    CHECK(r.drain(4242).size() == 0);
}

TEST(limits_refused_at_the_encoder) {
    MarkEncoder e;
    CHECK(!e.begin(1, 2, 0, true, ""));
    CHECK(!e.begin(1, 2, 0, true, std::string(257, 'x')));
    REQUIRE(e.begin(1, 2, 0, true, std::string(256, 'x')));
    CHECK(!e.attr_int("", 1));
    CHECK(!e.attr_int(std::string(65, 'k'), 1));
    CHECK(!e.attr_str("k", std::string(1025, 'v')));
    for (int i = 0; i < 64; ++i) CHECK(e.attr_none("k" + std::to_string(i)));
    CHECK(!e.attr_none("one-too-many"));
}

TEST(full_ring_refuses_then_wraps_in_order) {
    RingWriter w(1 << 12);
    RingReader r(dup(w.fd()));
    std::int64_t next_push = 1, next_seen = 1;
    for (int round = 0; round < 200; ++round) {
        // marks of varied sizes, so that frames meet the end of the ring at every offset
        while (w.push(encode(next_push, next_push, "m", static_cast<int>(next_push % 5)))) ++next_push;
        CHECK(w.pending_bytes() > (1 << 12) - 256);  // refused only when (nearly) full
        MarkColumns c = r.drain(1);
        CHECK(c.refused == 0);
        r.release(c.end_position);  // durable at once here: the writer may reuse the room
        CHECK(r.released() == r.position());
        for (std::size_t i = 0; i < c.size(); ++i) {
            if (c.start_ns[i] != next_seen) {
                CHECK(c.start_ns[i] == next_seen);
                return;
            }
            ++next_seen;
        }
    }
    CHECK(next_seen == next_push);
    CHECK(next_push > 200 * 40);
}

TEST(a_new_reader_continues_where_the_last_stopped) {  // a daemon restart
    RingWriter w(1 << 13);
    for (int i = 1; i <= 10; ++i) CHECK(w.push(encode(i, i, "m")));
    {
        RingReader first(dup(w.fd()));
        MarkColumns c = first.drain(1);
        CHECK(c.size() == 10);
        CHECK(first.release(c.end_position));  // durable: handed back
        first.commit(10);
    }
    for (int i = 11; i <= 15; ++i) CHECK(w.push(encode(i, i, "m")));
    RingReader second(dup(w.fd()));
    MarkColumns c = second.drain(1);
    REQUIRE(c.size() == 5);
    CHECK(c.start_ns[0] == 11 && c.start_ns[4] == 15);
    second.commit(5);
    CHECK(w.drained() == 15);
}

TEST(what_a_reader_drained_but_did_not_release_the_next_reads_again) {  // a daemon killed before its write
    RingWriter w(1 << 12);
    for (int i = 1; i <= 10; ++i) CHECK(w.push(encode(i, i, "m")));
    std::uint64_t id = 0, after_five = 0;
    {
        RingReader first(dup(w.fd()));
        id = first.ring_id();
        MarkColumns c = first.drain(1, 5 * 48);  // a mark "m" without attributes: a 48-byte frame
        REQUIRE(c.size() == 5);
        after_five = c.end_position;
        CHECK(first.drain(1).size() == 5);
        CHECK(!first.release(first.position() + 8) && !first.release(0));  // nothing past what it drained
        // the writer's room is still taken by what was drained and not released
        while (w.push(encode(99, 99, "m"))) {
        }
        CHECK(w.pending_bytes() > (1 << 12) - 256);
    }
    RingReader second(dup(w.fd()));
    CHECK(second.ring_id() == id && id != 0);  // the ring keeps its name across readers
    MarkColumns again = second.drain(1);
    REQUIRE(again.size() >= 10);
    CHECK(again.start_ns[0] == 1 && again.start_ns[9] == 10);
    RingReader third(dup(w.fd()));  // a reader told the first made marks durable up to after_five
    CHECK(third.skip_to(after_five + 4) == -1 && third.skip_to(1ull << 40) == -1 && third.skip_to(after_five - 8) == -1);
    const std::uint64_t before = w.drained();
    CHECK(third.skip_to(after_five) == 5);
    CHECK(w.drained() == before + 5);  // the client's flush counts the skipped marks as taken
    MarkColumns rest = third.drain(1);
    REQUIRE(rest.size() >= 1);
    CHECK(rest.start_ns[0] == 6 && rest.size() == again.size() - 5);
    CHECK(third.skip_to(after_five) == -1);  // only on a fresh reader
    RingWriter other(1 << 12);
    RingReader fourth(dup(other.fd()));
    CHECK(fourth.ring_id() != id);
}

TEST(json_doubles_as_python_repr) {
    // each right-hand side is Python's json.dumps(value)
    CHECK(dbl(0.5) == "0.5");
    CHECK(dbl(2.0) == "2.0");
    CHECK(dbl(0.0) == "0.0");
    CHECK(dbl(-0.0) == "-0.0");
    CHECK(dbl(1e15) == "1000000000000000.0");
    CHECK(dbl(1e16) == "1e+16");
    CHECK(dbl(1.5e16) == "1.5e+16");
    CHECK(dbl(123456789012345680.0) == "1.2345678901234568e+17");
    CHECK(dbl(0.0001) == "0.0001");
    CHECK(dbl(0.00001) == "1e-05");
    CHECK(dbl(-1.25e-7) == "-1.25e-07");
    CHECK(dbl(0.1 + 0.2) == "0.30000000000000004");
    CHECK(dbl(1e300) == "1e+300");
    CHECK(dbl(5e-324) == "5e-324");
    CHECK(dbl(123.456) == "123.456");
    CHECK(dbl(std::nan("")) == "NaN");
    CHECK(dbl(std::numeric_limits<double>::infinity()) == "Infinity");
    CHECK(dbl(-std::numeric_limits<double>::infinity()) == "-Infinity");
}

TEST(json_strings_as_python_writes_them) {
    CHECK(str("plain") == "\"plain\"");
    CHECK(str("a\"b\\c") == R"("a\"b\\c")");
    CHECK(str("\b\f\n\r\t") == R"("\b\f\n\r\t")");
    CHECK(str(std::string("\x01\x1f\x7f", 3)) == R"("\u0001\u001f\u007f")");
    CHECK(str("\xc3\xa9") == R"("\u00e9")");              // é
    CHECK(str("\xe2\x82\xac") == R"("\u20ac")");          // €
    CHECK(str("\xf0\x9f\x98\x80") == R"("\ud83d\ude00")");  // a character beyond the BMP: a surrogate pair
    CHECK(str("\xc0\xaf") == "<invalid>");                // overlong
    CHECK(str("\xed\xa0\x80") == "<invalid>");            // a surrogate in UTF-8
    CHECK(str("\xf4\x90\x80\x80") == "<invalid>");        // beyond U+10FFFF
    CHECK(str("\xe2\x82") == "<invalid>");                // cut short
}

TEST(an_unsealed_or_odd_descriptor_is_refused) {
    const int plain = memfd_create("x", MFD_CLOEXEC);  // no sealing at all
    REQUIRE(plain >= 0);
    CHECK(ftruncate(plain, kHeaderBytes + (1 << 12)) == 0);
    CHECK_THROWS(RingReader(plain));
    const int unsealed = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);  // could shrink under the daemon
    CHECK(ftruncate(unsealed, kHeaderBytes + (1 << 12)) == 0);
    CHECK_THROWS(RingReader(unsealed));
    const int tiny = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(ftruncate(tiny, 100) == 0 && fcntl(tiny, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
    CHECK_THROWS(RingReader(tiny));
    const int zeros = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);  // the right size, no header
    CHECK(ftruncate(zeros, kHeaderBytes + (1 << 12)) == 0 && fcntl(zeros, F_ADD_SEALS, F_SEAL_SHRINK) == 0);
    CHECK_THROWS(RingReader(zeros));
    int pipefd[2];
    REQUIRE(pipe(pipefd) == 0);
    close(pipefd[1]);
    CHECK_THROWS(RingReader(pipefd[0]));
}

TEST(a_header_changed_after_open_does_not_move_the_reader) {
    RingWriter w(1 << 12);
    CHECK(w.push(encode(5, 6, "m")));
    RingReader r(dup(w.fd()));
    Header* h = header_of(w.fd());
    REQUIRE(h != MAP_FAILED);
    h->capacity = std::uint64_t{1} << 40;  // the reader read it once, at open
    CHECK(r.drain(1).size() == 1);
    h->head.store(h->head.load() + (1 << 13));  // past what the ring holds
    CHECK_THROWS(r.drain(1));
    h->head.store(h->tail.load() - 8);  // behind the reader
    CHECK_THROWS(r.drain(1));
    munmap(h, kHeaderBytes);
}

TEST(broken_framing_closes_the_ring) {
    const std::uint32_t frames[][2] = {{0, kMarkFrame}, {12, kMarkFrame}, {1 << 20, kMarkFrame}, {16, 99}};
    for (const auto& f : frames) {
        std::vector<unsigned char> bytes(64, 0);
        std::memcpy(bytes.data(), f, sizeof f);
        MarkColumns c;
        CHECK_THROWS(decode_frames(bytes.data(), bytes.size(), 1, c));
    }
    std::vector<unsigned char> cut(4, 0);
    MarkColumns c;
    CHECK_THROWS(decode_frames(cut.data(), cut.size(), 1, c));
    std::vector<unsigned char> huge(80 << 10, 0);  // a mark frame larger than any mark the encoder writes
    const std::uint32_t head[2] = {80 << 10, kMarkFrame};
    std::memcpy(huge.data(), head, sizeof head);
    CHECK_THROWS(decode_frames(huge.data(), huge.size(), 1, c));
}

TEST(a_huge_mark_frame_breaks_the_ring_before_it_is_copied_under_a_budget) {
    RingWriter w(1 << 20);
    RingReader r(dup(w.fd()));
    CHECK(w.push(encode(1, 1, "m")));
    Header* h = header_of(w.fd());
    REQUIRE(h != MAP_FAILED);
    // what a hostile client can write after its frames: a 256 KiB "mark"
    unsigned char* data = reinterpret_cast<unsigned char*>(mmap(nullptr, kHeaderBytes + (1 << 20), PROT_READ | PROT_WRITE,
                                                                MAP_SHARED, w.fd(), 0)) + kHeaderBytes;
    const std::uint64_t at = h->head.load();
    const std::uint32_t head[2] = {256 << 10, kMarkFrame};
    std::memcpy(data + at, head, sizeof head);
    h->head.store(at + (256 << 10));
    CHECK_THROWS(r.drain(1, 4096));  // its size alone breaks the framing: no 256 KiB copy
    munmap(data - kHeaderBytes, kHeaderBytes + (1 << 20));
    munmap(h, kHeaderBytes);
}

TEST(bad_marks_are_refused_and_counted_the_rest_kept) {
    auto frame = [](std::string payload) {
        std::string f(8, '\0');
        const std::uint32_t head[2] = {static_cast<std::uint32_t>((8 + payload.size() + 7) & ~std::size_t{7}),
                                       kMarkFrame};
        std::memcpy(&f[0], head, 8);
        f += payload;
        f.resize(head[0], '\0');
        return f;
    };
    std::string good = encode(10, 20, "ok");
    std::string backwards = encode(30, 20, "x");
    std::string zero_start = encode(0, 20, "x");
    std::string bad_utf8 = encode(10, 20, "\xff\xfe");
    std::string twice;
    {
        MarkEncoder e;
        e.begin(10, 20, 0, true, "x");
        e.attr_int("k", 1);
        e.attr_int("k", 2);
        twice = e.bytes();
    }
    std::string bad_type = encode(10, 20, "x", 1);
    bad_type[32 + 1 + 2] = 9;  // the attribute's type byte, after the label "x" and the name length
    std::string long_attrs = encode(10, 20, "x", 1);
    long_attrs[26] = 2;  // says two attributes, holds one
    std::string bytes = frame(good) + frame(backwards) + frame(zero_start) + frame(bad_utf8) + frame(twice) +
                        frame(bad_type) + frame(long_attrs) + frame(good) + frame(std::string(5, 'z'));
    MarkColumns c;
    decode_frames(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), 9, c);
    CHECK(c.size() == 2);
    CHECK(c.refused == 7);
    CHECK(c.refused_why == "a mark that ends before it starts");
    CHECK(c.attrs_offsets.size() == 3);
    CHECK(json_of(c, 0) == R"({"pid":9})" && json_of(c, 1) == R"({"pid":9})");
}

TEST(refusals_reach_the_client) {
    RingWriter w(1 << 12);
    CHECK(w.push(encode(1, 2, "m")));
    RingReader r(dup(w.fd()));
    CHECK(r.drain(1).size() == 1);
    r.refuse(1, "the daemon keeps at most 256 attribute names");
    CHECK(w.refused() == 1 && w.drained() == 1);
    CHECK(w.refused_why() == "the daemon keeps at most 256 attribute names");
}

TEST(writer_threads_and_a_reader_race) {  // under TSan: no data race through the shared indices
    RingWriter w(1 << 12);
    RingReader r(dup(w.fd()));
    constexpr int kPerThread = 20000;
    std::atomic<int> full{0};
    auto produce = [&](std::int64_t base) {
        MarkEncoder e;
        for (int i = 1; i <= kPerThread; ++i) {
            e.begin(base + i, base + i, static_cast<std::uint64_t>(base), true, "m");
            e.attr_int("i", i);
            while (!w.push(e.bytes())) {
                full.fetch_add(1, std::memory_order_relaxed);
                std::this_thread::yield();
            }
        }
    };
    std::thread a(produce, 1'000'000), b(produce, 2'000'000);
    std::int64_t last[2] = {1'000'000, 2'000'000};
    std::size_t seen = 0;
    bool in_order = true;
    while (seen < 2 * kPerThread) {
        MarkColumns c = r.drain(1);
        r.release(c.end_position);
        for (std::size_t i = 0; i < c.size(); ++i) {
            const int who = c.thread_id[i] == 1'000'000 ? 0 : 1;
            in_order &= c.start_ns[i] == last[who] + 1;
            last[who] = c.start_ns[i];
        }
        seen += c.size();
    }
    a.join();
    b.join();
    CHECK(in_order);
    CHECK(seen == 2 * kPerThread);
    CHECK(r.drain(1).size() == 0);
    CHECK(w.pushed() == 2 * kPerThread);
}

namespace {

// A mark's payload built by hand, past what the encoder allows: `n` string attributes of `len` bytes.
std::string raw_mark_with_strings(int n, std::size_t len) {
    std::string p(32, '\0');
    const std::int64_t start = 10, end = 20;
    std::memcpy(&p[0], &start, 8);
    std::memcpy(&p[8], &end, 8);
    const std::uint16_t label_len = 1, n_attrs = static_cast<std::uint16_t>(n);
    std::memcpy(&p[24], &label_len, 2);
    std::memcpy(&p[26], &n_attrs, 2);
    p[28] = 1;
    p += "x";
    for (int i = 0; i < n; ++i) {
        const std::string name = "k" + std::to_string(i);
        const std::uint16_t name_len = static_cast<std::uint16_t>(name.size()), value_len = static_cast<std::uint16_t>(len);
        p.append(reinterpret_cast<const char*>(&name_len), 2);
        p.push_back(static_cast<char>(AttrType::Str));
        p += name;
        p.append(reinterpret_cast<const char*>(&value_len), 2);
        p.append(len, 'v');
    }
    return p;
}

std::string as_frame(const std::string& payload) {
    std::string f(8, '\0');
    const std::uint32_t head[2] = {static_cast<std::uint32_t>((8 + payload.size() + 7) & ~std::size_t{7}), kMarkFrame};
    std::memcpy(&f[0], head, 8);
    f += payload;
    f.resize(head[0], '\0');
    return f;
}

// A random valid UTF-8 string of up to `max_bytes` bytes: ASCII (controls, quotes and backslashes
// included), 2-, 3- and 4-byte characters.
std::string random_utf8(std::mt19937_64& rng, std::size_t max_bytes) {
    std::string s;
    const std::size_t target = rng() % (max_bytes + 1);
    while (s.size() < target) {
        const int kind = static_cast<int>(rng() % 5);
        const unsigned long cp = kind == 0 ? rng() % 0x80 : kind == 1 ? 0x80 + rng() % 0x780
                               : kind == 2 ? 0x800 + rng() % 0xD000  // below the surrogates
                               : kind == 3 ? 0x10000 + rng() % 0x100000 : 0x20 + rng() % 0x5F;
        std::string ch;
        if (cp < 0x80) {
            ch = std::string(1, static_cast<char>(cp));
        } else if (cp < 0x800) {
            ch = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
        } else if (cp < 0x10000) {
            ch = {static_cast<char>(0xE0 | (cp >> 12)), static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                  static_cast<char>(0x80 | (cp & 0x3F))};
        } else {
            ch = {static_cast<char>(0xF0 | (cp >> 18)), static_cast<char>(0x80 | ((cp >> 12) & 0x3F)),
                  static_cast<char>(0x80 | ((cp >> 6) & 0x3F)), static_cast<char>(0x80 | (cp & 0x3F))};
        }
        if (s.size() + ch.size() > target) break;
        s += ch;
    }
    return s;
}

}  // namespace

TEST(attributes_over_8_kib_of_json_stay_out_of_the_ring) {
    MarkEncoder e;
    CHECK(e.begin(1, 2, 0, true, "m"));
    for (int i = 0; i < 7; ++i) CHECK(e.attr_str("k" + std::to_string(i), std::string(1024, 'v')));
    CHECK(!e.attr_str("k7", std::string(1024, 'v')));  // 8 x 1 KiB: over 8 KiB of JSON
    CHECK(e.begin(1, 2, 0, true, "m"));
    std::string euros;
    for (int i = 0; i < 341; ++i) euros += "\xe2\x82\xac";  // 1023 bytes, 2050 characters of JSON
    for (int i = 0; i < 3; ++i) CHECK(e.attr_str("e" + std::to_string(i), euros));
    CHECK(!e.attr_str("e3", euros));
    // the reader refuses such a mark when a client writes it anyway
    const std::string bytes = as_frame(encode(1, 2, "ok")) + as_frame(raw_mark_with_strings(8, 1024)) +
                              as_frame(raw_mark_with_strings(7, 1024));
    MarkColumns c;
    decode_frames(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), 3, c);
    CHECK(c.size() == 2 && c.refused == 1);
    CHECK(c.refused_why == "attributes over 8 KiB as JSON (the daemon's limit per mark)");
    CHECK(json_of(c, 0) == R"({"pid":3})");
}

TEST(the_encoders_json_bound_holds_over_random_marks) {  // what it accepts, the reader never refuses for size
    std::mt19937_64 rng(20261130);
    RingWriter w(1 << 20);
    RingReader r(dup(w.fd()));
    int accepted = 0, declined = 0;
    std::size_t largest = 0;
    for (int m = 0; m < 3000; ++m) {
        MarkEncoder e;
        CHECK(e.begin(1, 2, 0, true, "m"));
        bool ok = true;
        const int n = static_cast<int>(rng() % 65);
        for (int k = 0; k < n && ok; ++k) {
            const std::string name = random_utf8(rng, 20) + "#" + std::to_string(k);
            switch (rng() % 4) {
                case 0: ok = e.attr_str(name, random_utf8(rng, 1024)); break;
                case 1: ok = e.attr_int(name, static_cast<std::int64_t>(rng())); break;
                case 2: ok = e.attr_float(name, -1.2345678901234567e-308); break;
                default: ok = e.attr_bool(name, rng() % 2 == 0);
            }
        }
        if (!ok) {
            ++declined;
            continue;
        }
        ++accepted;
        REQUIRE(w.push(e.bytes()));
        MarkColumns c = r.drain(std::numeric_limits<std::int64_t>::min());  // the widest pid
        REQUIRE(c.size() == 1);
        r.release(c.end_position);
        CHECK(c.refused == 0);
        largest = std::max(largest, json_of(c, 0).size());
    }
    CHECK(largest <= kMaxAttrsJsonBytes);
    CHECK(largest > kMaxAttrsJsonBytes * 3 / 4);  // the bound is not so loose that big marks never fit
    CHECK(accepted > 300 && declined > 300);
    for (int i = 0; i < 2000; ++i) {  // the string sizes are exact, not a bound
        const std::string s = random_utf8(rng, 64);
        CHECK(json_string_size(s) == str(s).size());
    }
}

TEST(a_drain_takes_whole_frames_up_to_its_budget) {
    RingWriter w(1 << 16);
    RingReader r(dup(w.fd()));
    const std::size_t frame = (8 + encode(1, 1, "m", 3).size() + 7) & ~std::size_t{7};
    for (int i = 1; i <= 100; ++i) CHECK(w.push(encode(i, i, "m", 3)));
    MarkColumns c = r.drain(1, 5 * frame + 3);
    CHECK(c.size() == 5 && c.start_ns[4] == 5);
    CHECK(r.pending_bytes() == 95 * frame);
    c = r.drain(1, 1);  // one frame over the budget: taken alone
    CHECK(c.size() == 1 && c.start_ns[0] == 6);
    c = r.drain(1);
    CHECK(c.size() == 94 && c.start_ns[0] == 7 && c.start_ns[93] == 100);
    // a small ring wrapping under small budgets: every mark once, in order
    RingWriter small(1 << 12);
    RingReader sr(dup(small.fd()));
    std::int64_t next_push = 1, next_seen = 1;
    for (int round = 0; round < 600; ++round) {
        while (small.push(encode(next_push, next_push, "m", static_cast<int>(next_push % 5)))) ++next_push;
        MarkColumns d = sr.drain(1, 100 + static_cast<std::size_t>(round % 7) * 40);
        CHECK(d.refused == 0);
        sr.release(d.end_position);
        for (std::size_t i = 0; i < d.size(); ++i) CHECK(d.start_ns[i] == next_seen++);
        sr.commit(d.size());
    }
    while (sr.pending_bytes()) {
        MarkColumns d = sr.drain(1, 64);
        sr.release(d.end_position);
        for (std::size_t i = 0; i < d.size(); ++i) CHECK(d.start_ns[i] == next_seen++);
    }
    CHECK(next_seen == next_push);
    CHECK(next_push > 1000);  // many wraps of the 4 KiB ring
}

int main() { return check::run_all(); }
