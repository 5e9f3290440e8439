// The SPSC ring: ordering, full-ring behaviour, and a producer/consumer race (run under TSan in CI).
#include <thread>

#include "check.hpp"
#include "greenprobe/sample.hpp"
#include "greenprobe/spsc_ring.hpp"

using greenprobe::Sample;
using greenprobe::SpscRing;

TEST(rejects_bad_capacity) {
    CHECK_THROWS(SpscRing<int>(3));
    CHECK_THROWS(SpscRing<int>(0));
}

TEST(full_ring_refuses_and_keeps_order) {
    SpscRing<int> r(4);
    for (int i = 0; i < 4; ++i) CHECK(r.try_push(i));
    CHECK(!r.try_push(99));  // full: refused, never blocks
    int v = -1;
    CHECK(r.try_pop(v) && v == 0);
    CHECK(r.try_push(4));
    int out[8];
    CHECK(r.pop_into(out, 8) == 4);
    CHECK(out[0] == 1 && out[1] == 2 && out[2] == 3 && out[3] == 4);
    CHECK(!r.try_pop(v));
    CHECK(r.size() == 0);
}

TEST(wraps_around_many_times) {
    SpscRing<int> r(8);
    int next_in = 0, next_out = 0;
    for (int round = 0; round < 1000; ++round) {
        for (int k = 0; k < 5; ++k) CHECK(r.try_push(next_in++));
        int out[5];
        const std::size_t n = r.pop_into(out, 5);
        CHECK(n == 5);
        for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == next_out++);
    }
}

TEST(concurrent_producer_consumer_loses_nothing) {
    SpscRing<Sample> r(1024);
    constexpr int64_t kN = 2000000;
    uint64_t refused = 0;
    std::thread producer([&] {
        for (int64_t i = 0; i < kN;) {
            Sample s{i, i - 1, static_cast<double>(i) * 0.5, static_cast<uint32_t>(i & 7), 1u};
            if (r.try_push(s)) ++i;
            else ++refused;
        }
    });
    int64_t expect = 0;
    bool ordered = true;
    Sample buf[256];
    while (expect < kN) {
        const std::size_t n = r.pop_into(buf, 256);
        for (std::size_t i = 0; i < n; ++i) {
            const Sample& s = buf[i];
            if (s.t_ns != expect || s.prev_t_ns != expect - 1 || s.energy_j_or_power_w != static_cast<double>(expect) * 0.5 ||
                s.channel != static_cast<uint32_t>(expect & 7)) {
                ordered = false;
            }
            ++expect;
        }
    }
    producer.join();
    CHECK(ordered);
    CHECK(expect == kN);
    CHECK(r.size() == 0);
    std::printf("  (producer saw a full ring %llu times)\n", static_cast<unsigned long long>(refused));
}

TEST_MAIN()
