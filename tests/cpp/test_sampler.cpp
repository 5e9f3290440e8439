// The sampler end to end on the synthetic sensor: edges, flags, stats and exact counter values.
#include <unistd.h>

#include <cmath>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "check.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/counter.hpp"
#include "greenprobe/registry.hpp"
#include "greenprobe/sampler.hpp"

using namespace greenprobe;

namespace {

// A counter whose truth is known: it draws `watts` from its first poll on, counts it in 1-mJ raw
// steps on a register of max_raw + 1 values, read through a WrapCounter as the RAPL sensors do.
// Scripted events at given polls: the raw value jumps by `jump_raw` from then on (a glitch), or
// the poll stalls for `stall_us` before reading. It logs the true (unwrapped, unjumped) raw count
// of every poll.
class ScriptedCounter final : public Sensor {
  public:
    struct Event {
        std::size_t poll;
        int64_t jump_raw;
        int64_t stall_us;
    };
    ScriptedCounter(double watts, uint64_t max_raw, uint64_t start_raw, double max_power_w, std::vector<Event> events)
        : watts_(watts), max_raw_(max_raw), start_raw_(start_raw), events_(std::move(events)), counter_(max_raw, 1e-3) {
        ChannelInfo info;
        info.domain = "scripted";
        info.resolution_j = 1e-3;
        info.nominal_update_period_ns = 1000000;
        info.max_power_w = max_power_w;
        info.wrap_j = static_cast<double>(max_raw + 1) * 1e-3;
        channels_.push_back(info);
    }
    std::string kind() const override { return "scripted"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    void poll(std::vector<Reading>& out) override {
        for (const auto& e : events_) {
            if (e.poll == truth_.size()) jump_ += e.jump_raw;
        }
        const int64_t t = poll_now_ns();  // the virtual clock run_script drives
        if (t0_ == 0) t0_ = t;
        const auto true_raw = static_cast<int64_t>(start_raw_) + static_cast<int64_t>(static_cast<double>(t - t0_) * 1e-9 * watts_ / 1e-3);
        const auto range = static_cast<int64_t>(max_raw_) + 1;
        const int64_t shown = ((true_raw + jump_) % range + range) % range;
        out[0].energy_j_or_power_w = counter_.update(static_cast<uint64_t>(shown));
        out[0].status = PollStatus::Ok;
        truth_.push_back(true_raw);
    }
    // How long poll `poll` stalls before it reads (run_script moves the clock on by it).
    int64_t stall_ns(std::size_t poll) const {
        int64_t ns = 0;
        for (const auto& e : events_) {
            if (e.poll == poll) ns += e.stall_us * 1000;
        }
        return ns;
    }
    const std::vector<int64_t>& truth() const { return truth_; }
    uint64_t wraps() const { return counter_.wraps(); }

  private:
    double watts_;
    uint64_t max_raw_, start_raw_;
    std::vector<Event> events_;
    WrapCounter counter_;
    std::vector<ChannelInfo> channels_;
    std::vector<int64_t> truth_;
    int64_t t0_ = 0, jump_ = 0;
};

// 10 W counted in mJ on a 2-J register (wraps every 200 ms), ceiling 50 W: a poll gap of 40 ms
// could hold a whole range. Polls every 1 ms for `ms` on a virtual clock (Sampler::poll_at, the
// threads' own steps: deterministic on a busy machine, where a starved thread's late polls would be
// gaps of their own) and records every poll, so that sample i is poll i. Checks that each recorded value is the truth less the steps of the polls flagged kGlitch
// (and the stats count them); returns the samples and the flagged polls.
struct ScriptRun {
    std::vector<Sample> out;
    std::vector<std::size_t> flagged;
};
ScriptRun run_script(const std::shared_ptr<ScriptedCounter>& s, int ms) {
    SamplerConfig cfg;
    cfg.period_ns = 1000000;
    cfg.record_all = true;
    Sampler sampler({s}, cfg);
    int64_t t = now_ns();
    for (int i = 0; i < ms; ++i) {
        t += s->stall_ns(static_cast<std::size_t>(i));
        sampler.poll_at(t);
        t += cfg.period_ns;
    }
    sampler.poll_at(t + s->stall_ns(static_cast<std::size_t>(ms)), true);  // the final read, as stop() makes
    ScriptRun r;
    sampler.drain(r.out);
    const auto& truth = s->truth();
    CHECK(r.out.size() == truth.size());
    double lost_j = 0.0;
    int wrong = 0;
    for (std::size_t i = 0; i < r.out.size() && i < truth.size(); ++i) {
        if (r.out[i].flags & kGlitch) {
            r.flagged.push_back(i);
            if (i > 0) lost_j += static_cast<double>(truth[i] - truth[i - 1]) * 1e-3;
        }
        const double want = static_cast<double>(truth[i] - truth[0]) * 1e-3 - lost_j;
        if (std::fabs(r.out[i].energy_j_or_power_w - want) > 1e-9 && wrong++ < 3) {
            std::printf("  poll %zu: recorded %.6f J, truth less what was excluded %.6f J\n", i, r.out[i].energy_j_or_power_w, want);
        }
    }
    CHECK(wrong == 0);
    CHECK(sampler.stats()[0].glitches == r.flagged.size());
    return r;
}

using Polls = std::vector<std::size_t>;

// The synthetic counters check_edges checks: 10 W and 20 W, updated every ms from t0.
std::shared_ptr<Sensor> two_counters(int64_t t0) {
    return open_sensor("synthetic", Options({{"waveform", "constant"}, {"base_w", "10"}, {"update_us", "1000"},
                                             {"t0_ns", std::to_string(t0)}, {"domains", "a,b"}}));
}

SamplerConfig ten_khz() {
    SamplerConfig cfg;
    cfg.period_ns = 100000;
    return cfg;
}

// Checks a run of the two-channel synthetic counter (10 W and 20 W, updated every ms from t0):
// one first and one final sample per channel, times in order, every value exact for its read
// time; returns how many samples saw a change.
int check_edges(const std::vector<Sample>& out, int64_t t0) {
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
        if (x.energy_j_or_power_w > watts * (since + 50e-6) || x.energy_j_or_power_w < watts * (since - 1.05e-3)) ++bad_values;
    }
    CHECK(firsts == 2);
    CHECK(finals == 2);
    CHECK(bad_values == 0);
    return changed;
}

}  // namespace

TEST(a_wrap_and_a_double_wrap_are_counted_exactly) {
    // starts 100 mJ below the top: wraps after ~10 ms, and again 200 ms later
    auto s = std::make_shared<ScriptedCounter>(10.0, 1999, 1900, 50.0, std::vector<ScriptedCounter::Event>{});
    const auto r = run_script(s, 300);
    CHECK(r.flagged.empty());
    CHECK(s->wraps() >= 2);
}

TEST(a_backward_glitch_is_excluded_not_added_as_a_wrap) {
    // 0.5 J backwards at poll 50: read as a wrap, that would add ~1.5 J in 1 ms (1500 W)
    auto s = std::make_shared<ScriptedCounter>(10.0, 1999, 0, 50.0, std::vector<ScriptedCounter::Event>{{50, -500, 0}});
    const auto r = run_script(s, 150);
    CHECK(r.flagged == Polls{50});
    // the glitch reading repeats the value before it: the step is left out, the next ones count
    REQUIRE(r.out.size() > 52);
    CHECK(r.out[50].energy_j_or_power_w == r.out[49].energy_j_or_power_w && (r.out[50].flags & kChanged));
    CHECK(r.out[51].energy_j_or_power_w > r.out[50].energy_j_or_power_w && !(r.out[51].flags & kGlitch));
}

TEST(a_forward_jump_above_the_ceiling_is_excluded) {
    // 0.3 J in one 1-ms poll is 300 W on a 50 W ceiling
    auto s = std::make_shared<ScriptedCounter>(10.0, 1999, 0, 50.0, std::vector<ScriptedCounter::Event>{{40, 300, 0}});
    CHECK(run_script(s, 120).flagged == Polls{40});
}

TEST(a_gap_that_could_hide_wraps_is_excluded) {
    // poll 30 stalls 120 ms before it reads: at 50 W a whole 2-J range fits in 40 ms, so the wraps
    // are unknown (the truth is 1.2 J, no wrap: the sampler cannot know that). Exactly the polls
    // whose gap may hold a range are excluded, and at least one of them.
    auto s = std::make_shared<ScriptedCounter>(10.0, 1999, 0, 50.0, std::vector<ScriptedCounter::Event>{{30, 0, 120000}});
    const auto r = run_script(s, 250);
    Polls long_gaps;
    for (std::size_t i = 1; i < r.out.size(); ++i) {
        if (static_cast<double>(r.out[i].t_ns - r.out[i].prev_t_ns) * 1e-9 * 50.0 >= 2.0) long_gaps.push_back(i);
    }
    CHECK(!long_gaps.empty() && long_gaps.front() >= 30 && long_gaps.back() <= 31);
    CHECK(r.flagged == long_gaps);
}

// The sampler's thread end to end, in real time (a smoke test: what it checks holds however late a
// busy machine lets the thread run; the rates are checked on the virtual clock below).
TEST(records_edges_with_exact_values) {
    const int64_t t0 = now_ns();
    Sampler sampler({two_counters(t0)}, ten_khz());
    CHECK(sampler.channels().size() == 2);
    sampler.start();
    ::usleep(200000);
    sampler.stop();
    std::vector<Sample> out;
    sampler.drain(out);
    check_edges(out, t0);
    auto st = sampler.stats();
    CHECK(st.size() == 1);
    CHECK(st[0].polls >= 2);
    CHECK(st[0].drops == 0);
    CHECK(st[0].state == "stopped");
}

TEST(records_every_edge_at_its_rate_on_a_virtual_clock) {
    const int64_t t0 = now_ns();
    Sampler sampler({two_counters(t0)}, ten_khz());
    int64_t t = t0 + 1;
    while (t < t0 + 200000000) t = sampler.poll_at(t);
    sampler.poll_at(t, true);
    std::vector<Sample> out;
    sampler.drain(out);
    const int changed = check_edges(out, t0);
    CHECK(changed >= 2 * 199);  // every 1-ms update of both channels over 200 ms is seen
    auto st = sampler.stats();
    CHECK(st[0].polls == 2001);
    CHECK(st[0].drops == 0);
}

TEST(a_stop_is_heard_within_a_slice_whatever_the_period) {
    std::shared_ptr<Sensor> s =
        open_sensor("synthetic", Options({{"waveform", "constant"}, {"update_us", "0"}, {"domains", "a"}}));
    SamplerConfig cfg;
    cfg.period_ns = 3600LL * 1000000000LL;  // an hour between polls
    Sampler sampler({s}, cfg);
    sampler.start();
    ::usleep(20000);  // the first poll is made, the thread sleeps towards the next
    const int64_t t0 = now_ns();
    sampler.stop();
    const int64_t took = now_ns() - t0;
    CHECK(took < 10 * kStopSliceNs);  // within a slice on an idle machine; a busy one is slower, never an hour
    std::vector<Sample> out;
    CHECK(sampler.drain(out) >= 2);  // the first poll and the stopping one
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

TEST(rejects_a_period_below_its_minimum) {
    std::shared_ptr<Sensor> s = open_sensor("synthetic", Options());
    SamplerConfig cfg;
    cfg.period_ns = kMinPeriodNs - 1;
    CHECK_THROWS(Sampler({s}, cfg));
    cfg.period_ns = kMinPeriodNs;
    Sampler ok({s}, cfg);
    CHECK(ok.config().period_ns == kMinPeriodNs);
}

TEST(edge_planner_learns_and_plans_windows) {
    EdgePlanner p(10000, 0);  // fine polls every 10 µs
    const int64_t P = 1000000;  // updates every 1 ms
    int64_t t = 5000000;
    CHECK(p.next(t + 10000, t) == t + 10000);  // nothing learned: regular polling
    for (int k = 0; k < 6; ++k) p.on_change(t + k * P, 10000);
    CHECK(p.learned());
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
    CHECK(p.period_ns() == P);             // not learned from
    const int64_t w2 = p.next(7 * P + 10000, 7 * P);
    CHECK(w2 < 8 * P - 200000 - 30000);    // the next window opens earlier
}

TEST(edge_planner_keeps_its_phase_when_an_update_was_seen_late) {
    EdgePlanner p(10000, 0);
    const int64_t P = 1000000;
    for (int k = 1; k <= 6; ++k) p.on_change(k * P, 10000);
    CHECK(p.next(6 * P + 20000, 6 * P + 10000) == 7 * P - 30000);
    // the update at 7P, on time, seen 400 µs late by a poll 450 µs after the one before it (a stall):
    // the sampler passes the middle of the two polls and their distance
    p.on_change(7 * P - 50000 + 225000, 450000);
    CHECK(p.period_ns() == P);  // not learned from
    const int64_t w = p.next(7 * P + 410000, 7 * P + 400000);
    CHECK(w <= 8 * P - 30000 && w >= 8 * P - 200000);  // around 8P, not 8P + 400 µs: the next update is seen
}

TEST(edge_planner_keeps_its_window_when_polled_for_another_channel) {
    EdgePlanner p(10000, 0);
    const int64_t P = 1000000;
    for (int k = 0; k < 6; ++k) p.on_change(k * P, 10000);
    const int64_t start = 6 * P - 30000;  // the window around the update predicted at 6P
    CHECK(p.next(5 * P + 20000, 5 * P + 10000) == start);
    // polls made for another channel before the window opens: they do not open it, nor count a miss
    CHECK(p.next(5 * P + 400000, 5 * P + 300000) == start);
    CHECK(p.next(5 * P + 600000, 5 * P + 500000) == start);
    CHECK(p.windows() == 1 && p.misses() == 0);
    // once it has opened: fine polling until its end
    CHECK(p.next(start + 10000, start) == start + 10000);
    // a change seen by a poll for another channel, well dated, is learned from
    p.on_change(6 * P + 2000, 10000);
    CHECK(p.period_ns() == P && p.learned());
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
    CHECK(!p.learned());
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
    // on a virtual clock: the planner's schedule, each poll when it asks (a thread on a busy machine
    // wakes late, and then its windows miss whatever the plan)
    int64_t t = t0;
    while (t < t0 + 600000000) t = sampler.poll_at(t);
    sampler.poll_at(t, true);
    std::vector<Sample> out;
    sampler.drain(out);
    auto st = sampler.stats()[0];
    REQUIRE(st.learned_update_periods_ns.size() == 1);
    CHECK(st.learned_update_periods_ns[0] > update - 1000000 && st.learned_update_periods_ns[0] < update + 1000000);
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

namespace {
// Two counters that update every 100 ms, the second 50 ms after the first (two GPUs out of phase),
// each adding 10 J per update.
class TwoPhases final : public Sensor {
  public:
    explicit TwoPhases(int64_t t0) : t0_(t0) {
        for (const char* d : {"gpu0", "gpu1"}) {
            ChannelInfo info;
            info.domain = d;
            info.resolution_j = 1.0;
            info.nominal_update_period_ns = kUpdate;
            channels_.push_back(info);
        }
    }
    static constexpr int64_t kUpdate = 100000000, kPhase = 50000000;
    std::string kind() const override { return "two-phases"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    void poll(std::vector<Reading>& out) override {
        const int64_t t = poll_now_ns();
        for (std::size_t c = 0; c < 2; ++c) {
            out[c].energy_j_or_power_w = 10.0 * static_cast<double>(last_update(t, c));
            out[c].status = PollStatus::Ok;
        }
    }
    // The index of channel c's latest update at or before t (updates at t0 + c x phase + k x update).
    int64_t last_update(int64_t t, std::size_t c) const {
        const int64_t tau = t - t0_ - static_cast<int64_t>(c) * kPhase;
        return tau >= 0 ? tau / kUpdate : (tau - kUpdate + 1) / kUpdate;
    }
    int64_t update_time(int64_t k, std::size_t c) const { return t0_ + static_cast<int64_t>(c) * kPhase + k * kUpdate; }

  private:
    int64_t t0_;
    std::vector<ChannelInfo> channels_;
};
}  // namespace

TEST(adaptive_schedule_plans_each_channel_in_its_own_phase) {
    // A second GPU whose counter updates 50 ms out of phase with the first: with one planner fed by
    // the first channel, its updates were seen only at the first one's windows, ~50 ms late.
    const int64_t t0 = now_ns() + 7000000;
    auto s = std::make_shared<TwoPhases>(t0);
    SamplerConfig cfg;
    cfg.period_ns = 1000000;  // 1 kHz inside windows (NVML's fastest polling)
    cfg.adaptive = true;
    Sampler sampler({s}, cfg);
    int64_t t = t0 - 7000000;  // on a virtual clock, as above
    while (t < t0 + 1493000000) t = sampler.poll_at(t);
    sampler.poll_at(t, true);
    std::vector<Sample> out;
    sampler.drain(out);
    const auto st = sampler.stats()[0];
    REQUIRE(st.learned_update_periods_ns.size() == 2);
    for (int64_t p : st.learned_update_periods_ns) CHECK(p > 98000000 && p < 102000000);
    // fixed polling would take ~1500 polls; two windows of a few ms per 100 ms take far fewer
    CHECK(st.polls < 600);
    int edges[2] = {0, 0}, wide[2] = {0, 0}, wrong[2] = {0, 0};
    for (const auto& x : out) {
        if (!(x.flags & kChanged) || (x.flags & kFirst) || x.t_ns - t0 < 700000000) continue;  // after learning
        const std::size_t c = x.channel;
        ++edges[c];
        if (x.t_ns - x.prev_t_ns > 4000000) ++wide[c];  // dated to within a few ms
        const int64_t update = s->update_time(s->last_update(x.t_ns, c), c);
        if (update <= x.prev_t_ns || update > x.t_ns) ++wrong[c];  // the update lies in (prev_t_ns, t_ns]
    }
    std::printf("  edges %d/%d, wide %d/%d, polls %llu, windows %llu, misses %llu\n", edges[0], edges[1], wide[0], wide[1],
                static_cast<unsigned long long>(st.polls), static_cast<unsigned long long>(st.edge_windows),
                static_cast<unsigned long long>(st.edge_misses));
    for (int c = 0; c < 2; ++c) {
        CHECK(edges[c] >= 6);
        CHECK(wide[c] <= edges[c] / 5);  // most updates of BOTH channels are dated within a few ms
        CHECK(wrong[c] == 0);
    }
}

namespace {
// Dates its own readings: each poll sleeps 2 ms, reads (the instant it logs), then sleeps 1 ms.
// Channel 0 gives that instant as Reading::t_ns; channel 1 gives one 10 s later (a sensor's error);
// channel 2 gives none (0: the poll's time). Every value changes on every poll.
class SelfDated final : public Sensor {
  public:
    SelfDated() {
        for (const char* d : {"dated", "wrong", "undated"}) {
            ChannelInfo info;
            info.domain = d;
            info.quantity = Quantity::Power;
            channels_.push_back(info);
        }
    }
    std::string kind() const override { return "self-dated"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    void poll(std::vector<Reading>& out) override {
        const int64_t start = now_ns();
        ::usleep(2000);
        const int64_t read = now_ns();
        ::usleep(1000);
        const int64_t end = now_ns();
        const double v = static_cast<double>(polls_.size());
        out[0] = Reading{v, PollStatus::Ok, read};
        out[1] = Reading{v, PollStatus::Ok, read + 10000000000};
        out[2] = Reading{v, PollStatus::Ok, 0};
        polls_.push_back({start, read, end});
    }
    struct Poll {
        int64_t start, read, end;
    };
    const std::vector<Poll>& polls() const { return polls_; }  // read after the sampler stopped

  private:
    std::vector<ChannelInfo> channels_;
    std::vector<Poll> polls_;
};
}  // namespace

TEST(a_reading_dated_by_its_sensor_is_stored_at_that_time_inside_its_poll) {
    auto s = std::make_shared<SelfDated>();
    SamplerConfig cfg;
    cfg.period_ns = 1000000;
    cfg.record_all = true;  // sample i of a channel is poll i
    Sampler sampler({s}, cfg);
    sampler.start();
    ::usleep(60000);
    sampler.stop();
    std::vector<Sample> out;
    sampler.drain(out);
    const auto& polls = s->polls();
    std::vector<std::vector<Sample>> by(3);
    for (const auto& x : out) by[x.channel].push_back(x);
    REQUIRE(polls.size() >= 5);
    for (const auto& b : by) REQUIRE(b.size() == polls.size());
    int wrong = 0;
    for (std::size_t i = 0; i < polls.size(); ++i) {
        const auto& p = polls[i];
        if (by[0][i].t_ns != p.read) ++wrong;  // exactly the sensor's time, not the poll's middle
        // a time outside the poll is held at the poll's end: after the read, before the next poll
        if (by[1][i].t_ns < p.end || (i + 1 < polls.size() && by[1][i].t_ns >= polls[i + 1].start)) ++wrong;
        // undated: the poll's middle, ~1.5 ms into it (the sensor's read is at ~2 ms)
        const int64_t mid = p.start + (p.end - p.start) / 2;
        if (std::llabs(by[2][i].t_ns - mid) > 200000) ++wrong;
        for (int c = 0; c < 3; ++c) {
            if (i > 0 && by[c][i].prev_t_ns != by[c][i - 1].t_ns) ++wrong;  // prev: the previous reading's time
        }
    }
    CHECK(wrong == 0);
}

namespace {
struct StampRecord {
    int64_t mono_ns, stamp_us, shifted;
};
}  // namespace

TEST(nvml_samples_are_dated_at_the_field_timestamp_not_the_poll) {
    // The fake's calls take 2 ms and fetch at 90 % of it: dated at the poll's middle, each sample
    // would lie ~0.8 ms before the fetch.
    char tmpl[] = "/tmp/greenprobe-stamps-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    REQUIRE(fd >= 0);
    ::close(fd);
    const std::string log = tmpl;
    const std::pair<const char*, std::string> vars[] = {
        {"FAKE_NVML_GPUS", "1"}, {"FAKE_NVML_UPDATE_MS", "10"}, {"FAKE_NVML_CALL_US", "2000"},
        {"FAKE_NVML_STAMP_AT", "0.9"}, {"FAKE_NVML_STAMP_LOG", log}};
    for (const auto& [k, v] : vars) ::setenv(k, v.c_str(), 1);
    std::vector<Sample> out;
    {
        std::shared_ptr<Sensor> s = open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}}));
        SamplerConfig cfg;
        cfg.period_ns = 1000000;
        cfg.record_all = true;
        Sampler sampler({s}, cfg);
        sampler.start();
        ::usleep(100000);
        sampler.stop();
        sampler.drain(out);
    }
    for (const auto& [k, v] : vars) ::unsetenv(k);
    std::vector<int64_t> stamps;
    if (std::FILE* f = std::fopen(log.c_str(), "rb")) {
        StampRecord r{};
        while (std::fread(&r, sizeof r, 1, f) == 1) stamps.push_back(r.mono_ns);
        std::fclose(f);
    }
    std::remove(log.c_str());
    REQUIRE(out.size() >= 20);
    int off = 0;
    int64_t worst = 0;
    for (const auto& x : out) {
        if (x.flags & kGone) continue;
        const auto it = std::lower_bound(stamps.begin(), stamps.end(), x.t_ns - 3000);
        const int64_t d = it == stamps.end() ? INT64_MAX : std::llabs(*it - x.t_ns);
        worst = std::max(worst, d);
        if (d > 3000) ++off;
    }
    std::printf("  %zu samples, worst distance to the fake's fetch %lld ns\n", out.size(), static_cast<long long>(worst));
    CHECK(off == 0);
}

// -- step(): the sampler's rules as a pure function --------------------------------------------
namespace {
ChannelInfo counter_info(double max_power_w, double wrap_j) {
    ChannelInfo info;
    info.domain = "c";
    info.quantity = Quantity::EnergyCounter;
    info.resolution_j = 1e-3;
    info.nominal_update_period_ns = 1000000;
    info.max_power_w = max_power_w;
    info.wrap_j = wrap_j;
    return info;
}
Reading ok(double v, int64_t t_ns = 0) { return Reading{v, PollStatus::Ok, t_ns}; }
}  // namespace

TEST(step_flags_first_change_keepalive_and_final) {
    ChannelState s;
    const ChannelInfo info = counter_info(0, 0);
    const StepRules rules{10000000, false};  // keep-alive every 10 ms
    StepResult r = step(s, ok(1.0), info, 7, PollWindow{1000000, 1000200, false}, rules);
    CHECK(r.event == StepEvent::Recorded && r.sample.flags == (kFirst | kChanged) && r.sample.channel == 7);
    CHECK(r.sample.t_ns == 1000100 && !r.edge);  // the poll's middle; a first reading teaches no edge
    r = step(s, ok(1.0), info, 7, PollWindow{2000000, 2000000, false}, rules);
    CHECK(r.event == StepEvent::Quiet);  // unchanged, keep-alive not due
    r = step(s, ok(1.5), info, 7, PollWindow{3000000, 3000000, false}, rules);
    CHECK(r.event == StepEvent::Recorded && r.sample.flags == kChanged && r.sample.energy_j_or_power_w == 1.5);
    CHECK(r.sample.prev_t_ns == 2000000);  // the edge lies in (prev poll, this poll]
    CHECK(r.edge && r.edge_ns == 2500000 && r.edge_uncertainty_ns == 1000000);
    r = step(s, ok(1.5), info, 7, PollWindow{12000000, 12000000, false}, rules);
    CHECK(r.event == StepEvent::Quiet);  // 9 ms since the last stored: not yet
    r = step(s, ok(1.5), info, 7, PollWindow{13000000, 13000000, false}, rules);
    CHECK(r.event == StepEvent::Recorded && r.sample.flags == kKeepalive);
    r = step(s, ok(1.5), info, 7, PollWindow{14000000, 14000000, true}, rules);
    CHECK(r.event == StepEvent::Recorded && r.sample.flags == kFinal);
}

TEST(step_excludes_an_impossible_counter_step_and_counts_on_from_it) {
    ChannelState s;
    const ChannelInfo info = counter_info(100.0, 0);  // at most 100 W
    const StepRules rules;
    step(s, ok(10.0), info, 0, PollWindow{0, 0, false}, rules);
    step(s, ok(10.1), info, 0, PollWindow{1000000, 1000000, false}, rules);  // 100 W over 1 ms: fine
    StepResult r = step(s, ok(60.1), info, 0, PollWindow{2000000, 2000000, false}, rules);  // 50 kW
    CHECK(r.glitch && (r.sample.flags & kGlitch) && r.sample.energy_j_or_power_w == 10.1);
    r = step(s, ok(60.15), info, 0, PollWindow{3000000, 3000000, false}, rules);
    CHECK(!r.glitch && std::fabs(r.sample.energy_j_or_power_w - 10.15) < 1e-12);  // later steps count, the jump stays out
    r = step(s, ok(50.0), info, 0, PollWindow{4000000, 4000000, false}, rules);  // backwards
    CHECK(r.glitch && std::fabs(r.sample.energy_j_or_power_w - 10.15) < 1e-12);
}

TEST(step_dates_by_the_sensor_inside_the_poll_and_handles_retry_and_gone) {
    ChannelState s;
    ChannelInfo info = counter_info(0, 0);
    info.quantity = Quantity::Power;
    const StepRules rules;
    StepResult r = step(s, ok(5.0, 1000150), info, 0, PollWindow{1000000, 1000400, false}, rules);
    CHECK(r.sample.t_ns == 1000150);
    r = step(s, ok(6.0, 999), info, 0, PollWindow{2000000, 2000400, false}, rules);
    CHECK(r.sample.t_ns == 2000000 && r.sample.prev_t_ns == 1000150);  // clamped into the poll
    r = step(s, Reading{0.0, PollStatus::Retry, 0}, info, 0, PollWindow{3000000, 3000000, false}, rules);
    CHECK(r.event == StepEvent::Retry && s.last_t == 2000000);  // nothing changes
    r = step(s, Reading{0.0, PollStatus::Gone, 0}, info, 0, PollWindow{4000000, 4000000, false}, rules);
    CHECK(r.event == StepEvent::Gone && r.sample.flags == kGone && r.sample.energy_j_or_power_w == 6.0 && s.gone);
    r = step(s, ok(7.0), info, 0, PollWindow{5000000, 5000000, false}, rules);
    CHECK(r.event == StepEvent::Quiet);  // a gone channel stays gone
}

TEST(poll_at_drives_the_sampler_on_a_virtual_clock) {
    std::shared_ptr<Sensor> s = open_sensor("synthetic", Options({{"waveform", "constant"}, {"update_us", "0"}}));
    SamplerConfig cfg;
    cfg.period_ns = 500000;
    Sampler sampler({s}, cfg);
    const int64_t t0 = now_ns();
    int64_t t = t0;
    for (int i = 0; i < 5; ++i) {
        const int64_t next = sampler.poll_at(t);
        CHECK(next == t + 500000);
        t = next;
    }
    sampler.poll_at(t, true);
    std::vector<Sample> out;
    sampler.drain(out);
    REQUIRE(!out.empty());
    CHECK(out.front().t_ns == t0 && (out.front().flags & kFirst));
    CHECK(out.back().t_ns == t && (out.back().flags & kFinal));
    CHECK(sampler.stats()[0].polls == 6 && sampler.stats()[0].state == "stopped");
    bool refused = false;
    try {
        sampler.poll_at(t + 1);
    } catch (const std::logic_error&) {
        refused = true;
    }
    CHECK(refused);  // no poll after the final one
    refused = false;
    try {
        sampler.start();
    } catch (const std::logic_error&) {
        refused = true;
    }
    CHECK(refused);  // a virtual sampler is never started
}

TEST_MAIN()
