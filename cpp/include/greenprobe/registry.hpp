// The single table of sensor kinds: one row per kind carries everything about it. The Python layer
// derives from it the order "auto" tries, the option table with its environment variables, the
// `greenprobe sensors` listing and the command line's help. A new sensor is one file and one row.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/options.hpp"
#include "greenprobe/sensor.hpp"

namespace greenprobe {

// One option a sensor reads (Options keys). Explicit arguments win over the environment variable.
struct SensorOption {
    const char* key;   // "powercap_root"
    const char* env;   // "GREENPROBE_POWERCAP_ROOT"; "" where the option is only given in a spec
    const char* help;  // one line: what it sets and its default
};

// The part a kind plays in sensors="auto".
enum class AutoRole : uint8_t {
    None = 0,      // opened only when named (synthetic)
    Device = 1,    // every kind that opens is kept: each measures its own hardware (GPUs, boards)
    Cpu = 2,       // the first in order that opens is kept: one source of the CPU packages is enough
    Estimate = 3,  // a model, opened only when no Cpu kind opened, and labelled an estimate
};

struct SensorKind {
    const char* name;
    const char* description;
    AutoRole auto_role;
    // Within "auto", lower first: counters before power readings, unprivileged before privileged
    // where both work. Device kinds: the ones that state hwmon_chips come before hwmon.
    int auto_order;
    const char* domains;  // the domains it reports and which contains which, in words
    std::vector<SensorOption> options;
    // Chips of the hwmon tree ("name" files) whose hardware this kind measures too, comma-separated:
    // "auto" leaves them out of hwmon (its skip_chips option) when this kind opened, so that no
    // hardware is counted twice.
    const char* hwmon_chips;
    std::unique_ptr<Sensor> (*open)(const Options& options);  // throws SensorError
    // GPU kinds: utilisation and memory of the GPUs the sensor measures, chosen the same way;
    // nullptr for the others.
    std::unique_ptr<GpuUsageReader> (*open_usage)(const Options& options);
};

const std::vector<SensorKind>& sensor_kinds();

// Opens a sensor by kind name; throws SensorError (Config for an unknown kind).
std::unique_ptr<Sensor> open_sensor(const std::string& kind, const Options& options);

// Opens the usage reader of a GPU kind; throws SensorError (Config for a kind without one).
std::unique_ptr<GpuUsageReader> open_gpu_usage(const std::string& kind, const Options& options);

// Factories, one per sensor file.
std::unique_ptr<Sensor> open_nvml(const Options& options);
std::unique_ptr<GpuUsageReader> open_nvml_usage(const Options& options);
std::unique_ptr<Sensor> open_amd_gpu(const Options& options);
std::unique_ptr<GpuUsageReader> open_amd_gpu_usage(const Options& options);
std::unique_ptr<Sensor> open_rapl_msr(const Options& options);
std::unique_ptr<Sensor> open_rapl_perf(const Options& options);
std::unique_ptr<Sensor> open_rapl_powercap(const Options& options);
std::unique_ptr<Sensor> open_hwmon(const Options& options);
std::unique_ptr<Sensor> open_synthetic(const Options& options);
std::unique_ptr<Sensor> open_cpu_estimate(const Options& options);

// Replay is built from arrays rather than options (see sensors/replay.cpp).
struct ReplayTrack {
    ChannelInfo info;
    std::vector<int64_t> offset_ns;  // time since the first recorded sample
    std::vector<double> energy_j_or_power_w;
};
std::unique_ptr<Sensor> open_replay(std::vector<ReplayTrack> tracks, std::string source_kind);

}  // namespace greenprobe
