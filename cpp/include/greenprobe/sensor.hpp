// The one interface every sensor implements.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace greenprobe {

enum class Quantity : uint8_t {
    EnergyCounter = 0,  // cumulative joules; energy of [a, b] = E(b) - E(a)
    Power = 1,          // watts, the mean over the window that precedes the update
};

struct ChannelInfo {
    std::string domain;                     // "package-0", "core", "dram", "gpu0", ...
    Quantity quantity = Quantity::EnergyCounter;
    bool estimated = false;                 // modelled, not measured
    double resolution_j = 0.0;              // energy counters: the smallest step, joules (0 for power)
    double resolution_w = 0.0;              // power: the smallest step, watts (0 for counters)
    int64_t nominal_update_period_ns = 0;   // what the hardware is documented to do; 0 = unknown
    int64_t averaging_window_ns = 0;        // power only: window the reading averages; 0 = since last update
    // Power only: the range that window is known to lie in, where it is not known exactly (NVML's
    // instant power averages 10-110 ms depending on the GPU: MEASUREMENT.md 1.3); both 0 when
    // averaging_window_ns is exact. Bounds stay valid for any window in the range.
    int64_t averaging_window_min_ns = 0;
    int64_t averaging_window_max_ns = 0;
    // The domain of the same sensor whose energy includes this one's ("package-0" for "core-0",
    // "psys" for "package-0" and "dram" where the platform domain exists); empty at the top level.
    // Containment of energy, not of the sysfs tree: powercap lists dram under its package, but the
    // package's energy does not include DRAM's.
    std::string parent_domain;
    // The device behind the domain, where the sensor knows it (GPUs: NVML's UUID and PCI bus id).
    std::string device_uuid;    // "GPU-8f3a..."; empty if unknown or not a device
    std::string device_bus_id;  // "00000000:18:00.0"
    // Other work shares what this channel measures: a MIG instance is measured as its whole GPU.
    bool shared = false;
    // Energy counters: what the sampler checks each step against (Sampler::run, judge_step in
    // counter.hpp). max_power_w: the most the domain can draw, a generous ceiling in watts (a step
    // above it is a glitch, not energy); 0 = unknown, no ceiling. wrap_j: the energy of one full
    // counter range in joules (a poll gap long enough to hold a whole range at max_power_w leaves
    // the number of wraps unknown); 0 = the counter never wraps. Power channels: max_power_w is
    // informative only.
    double max_power_w = 0.0;
    double wrap_j = 0.0;
    // What a reader of the data must know about where the values come from, in words, where the
    // sensor departed from its usual source ("power reading: the energy counter ran backwards at the
    // open check ..."); empty normally.
    std::string note;
};

// Every field of ChannelInfo, in its order: the one list that the bindings make the read-only
// class, the channel dicts and the replay's reading from (and that the proto, attribution.Channel
// and the Parquet metadata are tested against: greenprobe._core.CHANNEL_INFO_FIELDS).
#define GREENPROBE_CHANNEL_INFO_FIELDS(X)                                                                  \
    X(domain) X(quantity) X(estimated) X(resolution_j) X(resolution_w) X(nominal_update_period_ns)        \
    X(averaging_window_ns) X(averaging_window_min_ns) X(averaging_window_max_ns) X(parent_domain) X(device_uuid) X(device_bus_id) \
    X(shared) X(max_power_w) X(wrap_j) X(note)

namespace detail {
// ChannelInfo as the list has it: a field added to the struct and not to the list changes its size.
struct ChannelInfoAsListed {
#define GREENPROBE_AS_LISTED(name) decltype(ChannelInfo::name) name;
    GREENPROBE_CHANNEL_INFO_FIELDS(GREENPROBE_AS_LISTED)
#undef GREENPROBE_AS_LISTED
};
}  // namespace detail
static_assert(sizeof(detail::ChannelInfoAsListed) == sizeof(ChannelInfo),
              "list every ChannelInfo field, in its order, in GREENPROBE_CHANNEL_INFO_FIELDS");

// Outcome of reading one channel in one poll.
enum class PollStatus : uint8_t {
    Ok = 0,     // the reading is fresh
    Retry = 1,  // transient failure, reading invalid; try again next poll
    Gone = 2,   // device lost: stop this channel (a sensor lost as a whole says Gone for each)
};

struct Reading {
    // energy counters: cumulative joules; power channels: watts (the channel's quantity says which)
    double energy_j_or_power_w = 0.0;
    PollStatus status = PollStatus::Ok;
    // When the value was read, on CLOCK_MONOTONIC, where the sensor knows it better than the poll
    // does (NVML stamps each field value); 0 = the poll's time (the middle of poll()). The sampler
    // stores it as the sample's time, kept inside the poll's [start, end]; its schedule, lateness
    // and lag stay on the poll's clock. A sensor that sets it sets it on every poll (0 where unknown).
    int64_t t_ns = 0;
};

class Sensor {
  public:
    virtual ~Sensor() = default;

    virtual std::string kind() const = 0;
    virtual const std::vector<ChannelInfo>& channels() const = 0;

    // Reads every channel once; out has channels().size() elements.
    virtual void poll(std::vector<Reading>& out) = 0;

    // The fastest polling that means anything for this sensor (e.g. /proc/stat moves at jiffies).
    virtual int64_t min_period_ns() const { return 0; }

    // Facts for the metadata: vendor, driver version, paths used, units decoded.
    virtual std::map<std::string, std::string> info() const { return {}; }

    // Last error text of a channel that went Retry/Gone (for stats and logs).
    virtual std::string last_error() const { return {}; }
};

}  // namespace greenprobe
