// One recorded reading. The sampler stores a sample when a channel's value changes (an "edge"),
// plus a keep-alive sample when it has not changed for a while, so that storage follows the
// sensor's update rate, not the polling rate.
#pragma once

#include <cstdint>

namespace greenprobe {

enum SampleFlags : uint32_t {
    kChanged = 1u << 0,    // value differs from the previous poll: a sensor update was seen
    kKeepalive = 1u << 1,  // value unchanged; recorded so that readers know it still held at t_ns
    kFirst = 1u << 2,      // first reading of the channel
    kGone = 1u << 3,       // the device disappeared; no further samples for this channel
    kFinal = 1u << 4,      // last reading when the sampler stopped
    // Energy counters: the step from the previous reading to this one was physically impossible
    // (backwards, above the channel's max_power_w over the time it can have accrued, or after a
    // poll gap long enough to hide whole counter wraps) and is excluded: `value` does not include
    // it (it equals the previous sample's value plus nothing), so the energy of (prev update, t_ns]
    // is unknown. Later steps are counted from here on.
    kGlitch = 1u << 5,
};

// The flags by name, as the Python side reads them (exported as greenprobe._core.SAMPLE_FLAGS;
// attribution.py derives its FLAG_* names from it). Every SampleFlags member is listed here.
struct SampleFlagName {
    const char* name;
    uint32_t bit;
};
inline constexpr SampleFlagName kSampleFlagNames[] = {
    {"changed", kChanged}, {"keepalive", kKeepalive}, {"first", kFirst},
    {"gone", kGone},       {"final", kFinal},         {"glitch", kGlitch},
};
constexpr uint32_t listed_sample_flags() {
    uint32_t bits = 0;
    for (const auto& f : kSampleFlagNames) bits |= f.bit;
    return bits;
}
static_assert(listed_sample_flags() == (kGlitch << 1) - 1, "list every SampleFlags member in kSampleFlagNames");

struct Sample {
    int64_t t_ns;       // CLOCK_MONOTONIC time it was read: the sensor's own dating where it has one
                        // (NVML's field timestamp, inside the poll), else the middle of the poll
    int64_t prev_t_ns;  // time of this channel's previous reading, dated alike (edge lies in (prev_t_ns, t_ns])
    double energy_j_or_power_w;  // energy counters: cumulative joules since the sensor opened
                                 // (unwrapped); power channels: watts
    uint32_t channel;   // global channel id (see Sampler::channels())
    uint32_t flags;     // SampleFlags
};

static_assert(sizeof(Sample) == 32, "Sample should stay a 32-byte record");

}  // namespace greenprobe
