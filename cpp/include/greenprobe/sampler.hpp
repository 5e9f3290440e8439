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
