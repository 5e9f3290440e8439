// The sampler end to end on the synthetic sensor: edges, flags, stats and exact counter values.
#include <unistd.h>

#include <cmath>
#include <map>

#include "check.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"
#include "greenprobe/sampler.hpp"

using namespace greenprobe;

TEST(records_edges_with_exact_values) {
    const int64_t t0 = now_ns();
    std::shared_ptr<Sensor> s = open_sensor(
        "synthetic", Options({{"waveform", "constant"}, {"base_w", "10"}, {"update_us", "1000"},
                              {"t0_ns", std::to_string(t0)}, {"domains", "a,b"}}));
    SamplerConfig cfg;
    cfg.period_ns = 100000;  // 10 kHz
    Sampler sampler({s}, cfg);
    CHECK(sampler.channels().size() == 2);
    sampler.start();
    ::usleep(200000);
    sampler.stop();
    std::vector<Sample> out;
    sampler.drain(out);
    CHECK(out.size() > 100);
    std::map<uint32_t, int64_t> last_t;
    int firsts = 0, finals = 0, bad_values = 0, changed = 0;
    for (const auto& x : out) {
        if (x.flags & kFirst) ++firsts;
        if (x.flags & kFinal) ++finals;
        if (x.flags & kChanged) ++changed;
        CHECK(x.prev_t_ns <= x.t_ns);
        if (last_t.count(x.channel)) CHECK(x.t_ns > last_t[x.channel]);
        last_t[x.channel] = x.t_ns;
        // A constant 10 W counter updated each ms holds 10 W x (the last ms tick before the read),
        // so it lags the poll time by 0..1 ms (plus the few µs between the read and the timestamp).
        const double watts = x.channel == 1 ? 20.0 : 10.0;
        const double since = static_cast<double>(x.t_ns - t0) * 1e-9;
        if (x.value > watts * (since + 50e-6) || x.value < watts * (since - 1.05e-3)) ++bad_values;
    }
    CHECK(firsts == 2);
    CHECK(finals == 2);
    CHECK(bad_values == 0);
    CHECK(changed > 2 * 150);  // ~200 updates per channel in 200 ms
    auto st = sampler.stats();
    CHECK(st.size() == 1);
    CHECK(st[0].polls > 500);
    CHECK(st[0].drops == 0);
    CHECK(st[0].state == "stopped");
}

TEST(full_ring_counts_drops_and_never_blocks) {
    std::shared_ptr<Sensor> s =
        open_sensor("synthetic", Options({{"waveform", "constant"}, {"update_us", "0"}, {"domains", "a"}}));
    SamplerConfig cfg;
    cfg.period_ns = 50000;
    cfg.ring_capacity = 16;
    Sampler sampler({s}, cfg);
    sampler.start();
    ::usleep(100000);  // nobody drains: the ring fills
    sampler.stop();
    auto st = sampler.stats();
    CHECK(st[0].drops > 0);
    CHECK(st[0].pushed == 16);
    std::vector<Sample> out;
    CHECK(sampler.drain(out) == 16);
}

TEST(rejects_a_period_below_one_microsecond) {
    std::shared_ptr<Sensor> s = open_sensor("synthetic", Options());
    SamplerConfig cfg;
    cfg.period_ns = 10;
    CHECK_THROWS(Sampler({s}, cfg));
}

TEST_MAIN()
