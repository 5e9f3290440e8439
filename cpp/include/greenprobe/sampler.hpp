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

struct SamplerConfig {
    int64_t period_ns = 1000000;       // polling period (per sensor, raised to the sensor's minimum)
    std::size_t ring_capacity = 1 << 16;
    int64_t keepalive_ns = 50000000;   // record an unchanged value at least this often
    bool record_all = false;           // record every poll, not only changes (for edge studies)
    // Adaptive schedule: once the update period and phase of the sensor's first channel are learnt
    // from its changes, sleep between updates and poll at period_ns only in a window of
    // +-guard around each predicted update. Falls back to fixed polling after 3 missed windows.
    bool adaptive = false;
    int64_t guard_ns = 0;              // 0: the observed jitter of the update intervals, >= 3 periods
};

// Learns a channel's update period and phase from its changes and plans the next poll
// (the adaptive schedule). Pure logic, unit-tested.
class EdgePlanner {
  public:
    EdgePlanner(int64_t fine_period_ns, int64_t guard_ns) : fine_(fine_period_ns), guard_min_(guard_ns) {}

    // A change seen at edge_ns, dated to within uncertainty_ns (the poll window around it).
    void on_change(int64_t edge_ns, int64_t uncertainty_ns);
    // Next poll time: `regular` (one fine period later) while learning or inside a window,
    // else the start of the next window.
    int64_t next(int64_t regular, int64_t now);

    int64_t period_ns() const { return period_; }
    bool learnt() const { return count_ >= kLearn && period_ > 4 * fine_; }
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
    bool in_window_ = false;
    int64_t window_end_ = 0;
    int consecutive_misses_ = 0;
    uint64_t misses_total_ = 0, windows_ = 0;
};

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
    int64_t learnt_update_period_ns = 0;  // adaptive schedule: learnt period of the first channel
    uint64_t edge_windows = 0;   // adaptive schedule: windows opened around predicted updates
    uint64_t edge_misses = 0;    // adaptive schedule: windows that closed without a change
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

  private:
    struct Worker;
    void run(Worker& w);

    std::vector<std::shared_ptr<Sensor>> sensors_;
    SamplerConfig config_;
    std::vector<ChannelDesc> channels_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::atomic<bool> running_{false};
    std::atomic<bool> stop_requested_{false};
};

}  // namespace greenprobe
