// Wrap-corrected cumulative counters, converted to joules once.
// A hardware counter runs from 0 to `max_raw` and then wraps to 0; between two reads at most one
// wrap is assumed (the sampler polls many times per wrap period: RAPL wraps after minutes).
#pragma once

#include <cstdint>

namespace greenprobe {

class WrapCounter {
  public:
    // max_raw: largest raw value before the counter wraps to 0 (2^32-1 for RAPL MSRs,
    // max_energy_range_uj for powercap zones). joules_per_raw: unit of one raw step.
    WrapCounter(uint64_t max_raw, double joules_per_raw) noexcept
        : max_raw_(max_raw), joules_per_raw_(joules_per_raw) {}

    // Feeds one raw reading; returns the cumulative energy in joules since the first reading.
    double update(uint64_t raw) noexcept {
        if (!started_) {
            started_ = true;
            prev_ = raw;
            return 0.0;
        }
        uint64_t delta;
        if (raw >= prev_) {
            delta = raw - prev_;
        } else {
            delta = max_raw_ - prev_ + raw + 1;  // one wrap
            ++wraps_;
        }
        prev_ = raw;
        total_raw_ += delta;
        return static_cast<double>(total_raw_) * joules_per_raw_;
    }

    double joules() const noexcept { return static_cast<double>(total_raw_) * joules_per_raw_; }
    uint64_t total_raw() const noexcept { return total_raw_; }
    uint64_t wraps() const noexcept { return wraps_; }
    double joules_per_raw() const noexcept { return joules_per_raw_; }

  private:
    uint64_t max_raw_;
    double joules_per_raw_;
    bool started_ = false;
    uint64_t prev_ = 0;
    uint64_t total_raw_ = 0;
    uint64_t wraps_ = 0;
};

}  // namespace greenprobe
