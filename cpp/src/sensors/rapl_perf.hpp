// rapl-perf's events opened for another process (greenprobe-perf-helper): the same trees, packages
// and CPUs as the sensor, the descriptors handed to the caller.
#pragma once

#include <vector>

#include "greenprobe/options.hpp"
#include "perf_handoff.hpp"

namespace greenprobe {

// Opens the power PMU's RAPL events, one CPU per package, as open_rapl_perf would (options:
// perf_event_root, sysfs_cpu_root, proc_root); the caller owns the descriptors. Throws SensorError.
std::vector<perf_handoff::Event> open_rapl_perf_events(const Options& options);

}  // namespace greenprobe
