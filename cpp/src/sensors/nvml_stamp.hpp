// NVML's field timestamps mapped to CLOCK_MONOTONIC: pure arithmetic on clock reads taken around the
// call (nvml.cpp reads the clocks), unit-tested with made-up reads.
//
// nvmlFieldValue_t::timestamp is CLOCK_REALTIME in µs taken when NVML fetched the value from the
// driver, not when the GPU's sensor updated it: it does not date the sensor's update (that is the
// edge the sampler brackets between two readings), it dates the read inside the call. What it
// improves is the call's own latency: a driver call takes µs to ms (it takes the RM lock and may talk
// to the GSP), and a poll of several GPUs spans several calls, so the poll's middle can be hundreds
// of µs off the moment a value was read.
#pragma once

#include <cstdint>

namespace greenprobe::nvml {

// One read of both clocks, realtime between two monotonic reads: their mean is the realtime read's
// monotonic time, to within half their gap.
struct ClockPair {
    int64_t mono_a = 0, wall = 0, mono_b = 0;
};

// The offset between the clocks, read before and after the call; the mean of the two is used. A
// mapped time outside [call start, call end] widened by the pairs' error and kToleranceNs, or a wall
// clock that stepped during the call (the two offsets disagree: NTP, settimeofday), is rejected.
class StampMap {
  public:
    // NVML stamps in whole µs (up to 1 µs early); a little more for the clock reads themselves.
    static constexpr int64_t kToleranceNs = 10000;

    StampMap(const ClockPair& before, const ClockPair& after) noexcept
        : start_(before.mono_b), end_(after.mono_a) {
        const int64_t off0 = before.mono_a / 2 + before.mono_b / 2 - before.wall;
        const int64_t off1 = after.mono_a / 2 + after.mono_b / 2 - after.wall;
        error_ = (before.mono_b - before.mono_a) / 2 + (after.mono_b - after.mono_a) / 2;
        const int64_t drift = off1 - off0;
        stepped_ = (drift < 0 ? -drift : drift) > error_ + kToleranceNs;
        offset_ = off0 / 2 + off1 / 2;
    }

    // The CLOCK_MONOTONIC time of a field's timestamp, or 0 where it cannot be trusted.
    int64_t map(long long timestamp_us) const noexcept {
        constexpr long long kMaxUs = 4102444800LL * 1000000LL;  // 2100-01-01: beyond it, garbage
        if (stepped_ || timestamp_us <= 0 || timestamp_us > kMaxUs) return 0;
        const int64_t t = static_cast<int64_t>(timestamp_us) * 1000 + offset_;
        const int64_t slack = error_ + kToleranceNs;
        if (t < start_ - slack || t > end_ + slack) return 0;
        return t;
    }
    bool stepped() const noexcept { return stepped_; }

  private:
    int64_t start_, end_;
    int64_t offset_ = 0, error_ = 0;
    bool stepped_ = false;
};

}  // namespace greenprobe::nvml
