// The sampler end to end on the synthetic sensor: edges, flags, stats and exact counter values.
#include <unistd.h>

#include <cmath>
#include <algorithm>
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

TEST(edge_planner_learns_and_plans_windows) {
    EdgePlanner p(10000, 0);  // fine polls every 10 µs
    const int64_t P = 1000000;  // updates every 1 ms
    int64_t t = 5000000;
    CHECK(p.next(t + 10000, t) == t + 10000);  // nothing learnt: regular polling
    for (int k = 0; k < 6; ++k) p.on_change(t + k * P, 10000);
    CHECK(p.learnt());
    CHECK(p.period_ns() == P);
    const int64_t last = t + 5 * P;
    const int64_t now = last + 1000;
    const int64_t guard = 3 * 10000;  // perfectly regular updates: no jitter, three fine polls
    CHECK(p.next(now + 10000, now) == last + P - guard);  // sleep until the window opens
    // inside the window: fine polling
    CHECK(p.next(last + P - guard + 10000, last + P - guard) == last + P - guard + 10000);
    // the change arrives: plan the next window
    p.on_change(last + P + 3000, 10000);
    const int64_t n2 = p.next(last + P + 13000, last + P + 3000);
    CHECK(n2 == last + P + 3000 + P - guard);
}

TEST(edge_planner_widens_after_an_early_update) {
    EdgePlanner p(10000, 0);
    const int64_t P = 1000000;
    for (int k = 1; k <= 6; ++k) p.on_change(k * P, 10000);
    const int64_t w1 = p.next(6 * P + 20000, 6 * P + 10000);  // window opens at 7P - 30 µs
    CHECK(w1 == 7 * P - 30000);
    p.on_change(7 * P - 200000, 400000);  // seen by the first poll of the window: poorly dated
    CHECK(p.period_ns() == P);             // not learnt from
    const int64_t w2 = p.next(7 * P + 10000, 7 * P);
    CHECK(w2 < 8 * P - 200000 - 30000);    // the next window opens earlier
}

TEST(edge_planner_relearns_after_three_misses) {
    EdgePlanner p(10000, 0);
    for (int k = 0; k < 6; ++k) p.on_change(k * 1000000LL, 10000);
    int64_t now = 5000000;
    int64_t next = p.next(now + 10000, now);  // opens the first window
    for (int miss = 0; miss < 3; ++miss) {
        now = next + 300000;             // past the window's end: no change was seen
        next = p.next(now + 10000, now);  // a miss; opens the next window (or gives up)
    }
    CHECK(p.misses() == 3);
    CHECK(!p.learnt());
}

TEST(adaptive_schedule_dates_edges_with_few_polls) {
    const int64_t t0 = now_ns();
    const int64_t update = 20000000;  // 20 ms, like a fast NVML board
    std::shared_ptr<Sensor> s = open_sensor(
        "synthetic", Options({{"waveform", "constant"}, {"update_us", "20000"}, {"t0_ns", std::to_string(t0)}}));
    SamplerConfig cfg;
    cfg.period_ns = 50000;  // 20 kHz inside windows
    cfg.adaptive = true;
    Sampler sampler({s}, cfg);
    sampler.start();
    ::usleep(600000);
    sampler.stop();
    std::vector<Sample> out;
    sampler.drain(out);
    auto st = sampler.stats()[0];
    CHECK(st.learnt_update_period_ns > update - 1000000 && st.learnt_update_period_ns < update + 1000000);
    CHECK(st.edge_windows > 10);
    // fixed polling at 20 kHz would take ~12000 polls in 0.6 s; the windows need far fewer
    CHECK(st.polls < 6000);
    int late_edges = 0, edges = 0;
    for (const auto& x : out) {
        if (!(x.flags & kChanged) || (x.flags & kFirst)) continue;
        const int64_t since = x.t_ns - t0;
        if (since < 200000000) continue;  // after learning
        ++edges;
        const int64_t truth = t0 + since / update * update;
        if (x.prev_t_ns > truth || x.t_ns - truth > 2000000) ++late_edges;
    }
    CHECK(edges >= 15);
    CHECK(late_edges <= edges / 5);  // most updates are dated inside a fine poll window
}

TEST_MAIN()
