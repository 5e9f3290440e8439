// The sampler: one polling thread per sensor on absolute deadlines, one SPSC ring per sensor,
// one consumer that drains all rings.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "greenprobe/sample.hpp"
#include "greenprobe/sensor.hpp"
#include "greenprobe/spsc_ring.hpp"

namespace greenprobe {

// The sampler's defaults and limits, defined once (exported as greenprobe._core.SAMPLER_DEFAULTS,
// which the Probe, the command line and the study read).
inline constexpr int64_t kDefaultPeriodNs = 1000000;      // 1 kHz
inline constexpr int64_t kMinPeriodNs = 50000;            // faster polling costs CPU and dates nothing better
inline constexpr int64_t kStopSliceNs = 50000000;         // a sensor thread hears stop() within this, whatever its period
inline constexpr int64_t kDefaultKeepaliveNs = 50000000;  // an unchanged value is stored every 50 ms
inline constexpr std::size_t kDefaultRingCapacity = 1 << 16;
inline constexpr std::size_t kMinRingCapacity = 16;

struct SamplerConfig {
    int64_t period_ns = kDefaultPeriodNs;  // polling period (per sensor, raised to the sensor's minimum)
    std::size_t ring_capacity = kDefaultRingCapacity;
    int64_t keepalive_ns = kDefaultKeepaliveNs;  // record an unchanged value at least this often
    bool record_all = false;           // record every poll, not only changes (for edge studies)
    // Adaptive schedule: each channel's update period and phase are learned from its changes (one
    // EdgePlanner per channel); the sensor sleeps between updates and polls at period_ns only in a
    // window of +-guard around each channel's predicted update (the earliest window of any channel
    // sets the next poll, so two GPUs out of phase are each dated within their own windows). A
    // channel falls back to fixed polling after 3 missed windows, while it keeps changing.
    bool adaptive = false;
    int64_t guard_ns = 0;              // 0: the observed jitter of the update intervals, >= 3 periods
};

// Learns a channel's update period and phase from its changes and plans the next poll
// (the adaptive schedule). Pure logic, unit-tested. The sensor is polled as a whole, so a channel
// also sees polls made for the others: a poll before its window opens is an extra observation (a
// change it sees is learned from, as well dated as that poll dates it), not the window.
class EdgePlanner {
  public:
    EdgePlanner(int64_t fine_period_ns, int64_t guard_ns) : fine_(fine_period_ns), guard_min_(guard_ns) {}

    // A change seen at edge_ns, dated to within uncertainty_ns (the poll window around it).
    void on_change(int64_t edge_ns, int64_t uncertainty_ns);
    // Next poll time for this channel: `regular` (one fine period later) while learning or inside
    // a window, else the start of the planned window (planned once, kept until it has passed).
    int64_t next(int64_t regular, int64_t now);
    // Whether this channel should set the schedule: it is learned, or it is learning and changed
    // within `horizon_ns` (a channel that never moves, or has stopped, has nothing to predict and
    // does not hold the sensor at fine polling).
    bool active(int64_t now, int64_t horizon_ns) const {
        return learned() || (last_seen_ != 0 && now - last_seen_ <= horizon_ns);
    }

    int64_t period_ns() const { return period_; }
    bool learned() const { return count_ >= kLearn && period_ > 4 * fine_; }
    uint64_t misses() const { return misses_total_; }
    uint64_t windows() const { return windows_; }

  private:
    static constexpr std::size_t kHistory = 16;
    static constexpr std::size_t kLearn = 4;
    int64_t guard() const;
    int64_t fine_, guard_min_;
    int64_t intervals_[kHistory] = {};
    std::size_t count_ = 0, pos_ = 0;
    int64_t last_ = 0, period_ = 0, extra_guard_ = 0;
    int64_t last_seen_ = 0;  // the last change, kept across relearning
    bool in_window_ = false;  // a window is planned (it may not have opened yet)
    int64_t window_start_ = 0, window_end_ = 0;
    int consecutive_misses_ = 0;
    uint64_t misses_total_ = 0, windows_ = 0;
};

// One channel's state between polls: what the pure step() below reads and updates. The sampler
// keeps one per channel, touched by its sensor's polling thread alone (or by poll_at, never both).
struct ChannelState {
    double last_value = 0.0;     // as the sensor read it
    // Energy counters: added to the sensor's value so that the recorded value leaves out every
    // step excluded as a glitch (minus their sum).
    double offset = 0.0;
    double last_recorded = 0.0;  // the last value stored (offset included)
    // The start of the poll window that saw the channel's last update: a step accrues from that
    // update on (judge_step's accrual time).
    int64_t since = 0;
    // Two clocks: the poll that read it last (the schedule's: planners, keep-alives) and the time its
    // last reading is stored at (the sensor's own dating where it gives one, else that poll's):
    // samples, their prev_t_ns and the accrual times judge_step weighs are on the latter.
    int64_t last_poll = 0;
    int64_t last_t = 0;
    int64_t last_pushed = 0;     // the poll whose reading was last stored (keep-alives count from it)
    bool seen = false;
    bool gone = false;
};

// One poll of a sensor: it ran within [t0, t1]; `final` when the sampler is stopping.
struct PollWindow {
    int64_t t0 = 0;
    int64_t t1 = 0;
    bool final = false;
    int64_t middle() const { return t0 + (t1 - t0) / 2; }
};

struct StepRules {
    int64_t keepalive_ns = 50000000;  // store an unchanged value at least this often
    bool record_all = false;          // store every poll
};

enum class StepEvent : uint8_t {
    Quiet,     // nothing to store: unchanged, and a keep-alive is not due
    Recorded,  // `sample` is to be stored
    Retry,     // the read failed transiently; the state is unchanged
    Gone,      // the channel is lost: `sample` (flag kGone) is its last; later readings are ignored
};

struct StepResult {
    StepEvent event = StepEvent::Quiet;
    Sample sample{};
    bool glitch = false;  // an energy counter's step was excluded (the sample has kGlitch)
    // A change after the first reading, dated to the middle of the two polls around it, to within
    // their distance: what the adaptive schedule learns from.
    bool edge = false;
    int64_t edge_ns = 0;
    int64_t edge_uncertainty_ns = 0;
};

// Turns one reading of one channel into what the sampler stores: flags, the counter check
// (judge_step), the value with excluded steps left out, the dating. Pure: no clock, no I/O.
StepResult step(ChannelState& state, const Reading& reading, const ChannelInfo& info, uint32_t channel,
                const PollWindow& poll, const StepRules& rules);

struct ChannelDesc {
    uint32_t id;
    std::size_t sensor_index;
    std::string sensor;
    ChannelInfo info;
};

struct SensorStats {
    std::string sensor;
    int64_t period_ns = 0;
    uint64_t polls = 0;
    uint64_t late_polls = 0;     // polls that started more than one period after their deadline
    uint64_t skipped_polls = 0;  // deadlines dropped to catch up after a long stall
    int64_t max_lag_ns = 0;      // worst lateness of a poll start against its deadline
    int64_t sum_lag_ns = 0;
    uint64_t drops = 0;          // samples lost to a full ring
    uint64_t pushed = 0;
    uint64_t retries = 0;        // channel reads that failed transiently
    uint64_t glitches = 0;       // energy-counter steps excluded as impossible (samples flagged kGlitch)
    // Adaptive schedule: the learned update period of each of the sensor's channels, in their order
    // (0 while not learned), and the windows planned around predicted updates and those that closed
    // without a change, summed over the channels.
    std::vector<int64_t> learned_update_periods_ns;
    uint64_t edge_windows = 0;
    uint64_t edge_misses = 0;
    std::string state;           // "idle", "running", "gone", "stopped"
    std::string last_error;
};

class Sampler {
  public:
    Sampler(std::vector<std::shared_ptr<Sensor>> sensors, SamplerConfig config);
    ~Sampler();

    Sampler(const Sampler&) = delete;
    Sampler& operator=(const Sampler&) = delete;

    void start();
    void stop();  // joins the threads; each channel gets a final sample
    bool running() const { return running_.load(std::memory_order_acquire); }

    // Pops everything currently in the rings (single consumer). Appends to out.
    std::size_t drain(std::vector<Sample>& out);

    const std::vector<ChannelDesc>& channels() const { return channels_; }
    std::vector<SensorStats> stats() const;
    const std::vector<std::shared_ptr<Sensor>>& sensors() const { return sensors_; }
    const SamplerConfig& config() const { return config_; }

    // A virtual clock, for stand-ins and recordings that must not race the wall clock: polls every
    // sensor once, as if the poll ran at t_ns exactly (a sensor that computes its reading from the
    // clock, synthetic or replay, reads t_ns: poll_now_ns), through the same steps as the threads; returns
    // when the schedule would poll next (the earliest of the sensors). `final` is the stopping poll
    // (each channel's sample is flagged kFinal) after which the sampler takes no more polls.
    // A sampler driven so is never started, nor one started ever driven so (std::logic_error).
    int64_t poll_at(int64_t t_ns, bool final = false);

  private:
    struct Worker;
    void run(Worker& w);
    void poll_once(Worker& w, const PollWindow& poll);
    int64_t plan(Worker& w, int64_t deadline, int64_t now);

    std::vector<std::shared_ptr<Sensor>> sensors_;
    SamplerConfig config_;
    std::vector<ChannelDesc> channels_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::atomic<bool> running_{false};
    std::atomic<bool> stop_requested_{false};
    bool started_ = false;   // start() was called (only from the owner's thread, as poll_at)
    bool stepped_ = false;   // poll_at was called
    bool finished_ = false;  // poll_at's final poll was made
};

}  // namespace greenprobe
