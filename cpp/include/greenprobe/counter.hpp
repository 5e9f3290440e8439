// Wrap-corrected cumulative counters, converted to joules once, and the check of each step.
// A hardware counter runs from 0 to `max_raw` and then wraps to 0; between two reads at most one
// wrap is assumed (the sampler polls many times per wrap period: RAPL wraps after minutes).
//
// The two layers: WrapCounter reads every backward step as one wrap, because from two raw values
// alone a wrap and a backwards glitch look the same. What tells them apart is physics, which the
// sampler knows (time, and the channel's max_power_w and wrap_j): a true wrap adds the little energy
// between a value near the top and one near 0, while a glitch of D raw steps backwards adds nearly a
// whole range (max - D), far more than the device can draw in the time. judge_step below is that
// check; the sampler applies it to every step of every energy counter and excludes what fails it.
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

// Verdict on one step of a cumulative energy counter (joules, already unwrapped).
enum class StepVerdict : uint8_t {
    Ok = 0,
    Backwards,       // the cumulative value went down: never energy
    AboveCeiling,    // more energy than max_power_w allows over the time the step can have accrued
    WrapsAmbiguous,  // the poll gap could hold a whole counter range at max_power_w: wraps unknown
};

// step_j: new cumulative value minus the previous one. accrual_s: the longest time the step can
// have accrued over: from the earliest moment the previous update can have happened (the start of
// the poll window that saw it) to this read. Not the poll gap: a counter that updates every 100 ms
// polled every 1 ms shows 100 ms of energy in one 1-ms poll gap. gap_s: time since the previous
// read of the counter (how long the counter went unwatched). max_power_w: 0 = unknown (no ceiling,
// no ambiguity check); wrap_j: 0 = never wraps. slack_j: one resolution step, so that quantisation
// never trips the ceiling.
inline StepVerdict judge_step(double step_j, double accrual_s, double gap_s, double max_power_w, double wrap_j,
                              double slack_j) noexcept {
    if (step_j < 0.0) return StepVerdict::Backwards;
    if (max_power_w > 0.0) {
        if (wrap_j > 0.0 && gap_s * max_power_w >= wrap_j) return StepVerdict::WrapsAmbiguous;
        if (step_j > max_power_w * accrual_s + slack_j) return StepVerdict::AboveCeiling;
    }
    return StepVerdict::Ok;
}

}  // namespace greenprobe
