// The single table of sensor kinds.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "greenprobe/options.hpp"
#include "greenprobe/sensor.hpp"

namespace greenprobe {

struct SensorKind {
    const char* name;
    const char* description;
    bool in_auto;  // tried by sensors="auto"
    std::unique_ptr<Sensor> (*open)(const Options& options);  // throws SensorError
};

const std::vector<SensorKind>& sensor_kinds();

// Opens a sensor by kind name; throws SensorError (Config for an unknown kind).
std::unique_ptr<Sensor> open_sensor(const std::string& kind, const Options& options);

// Factories, one per sensor file.
std::unique_ptr<Sensor> open_nvml(const Options& options);
std::unique_ptr<Sensor> open_rapl_msr(const Options& options);
std::unique_ptr<Sensor> open_rapl_powercap(const Options& options);
std::unique_ptr<Sensor> open_synthetic(const Options& options);
std::unique_ptr<Sensor> open_cpu_estimate(const Options& options);

// Replay is built from arrays rather than options (see sensors/replay.cpp).
struct ReplayTrack {
    ChannelInfo info;
    std::vector<int64_t> offset_ns;  // time since the first recorded sample
    std::vector<double> value;
};
std::unique_ptr<Sensor> open_replay(std::vector<ReplayTrack> tracks, std::string source_kind);

}  // namespace greenprobe
