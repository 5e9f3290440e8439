#include "greenprobe/registry.hpp"

namespace greenprobe {

const std::vector<SensorKind>& sensor_kinds() {
    static const std::vector<SensorKind> kinds = {
        {"nvml", "NVIDIA GPUs through NVML (loaded at run time): total-energy counter and instant power per GPU",
         true, &open_nvml},
        {"rapl-msr", "Intel/AMD RAPL energy counters read from /dev/cpu/N/msr (one CPU per package)", true,
         &open_rapl_msr},
        {"rapl-powercap", "RAPL energy counters through the Linux powercap sysfs tree (every zone)", true,
         &open_rapl_powercap},
        {"cpu-estimate", "ESTIMATE: CPU power modelled from /proc/stat utilisation and a rated power", true,
         &open_cpu_estimate},
        {"synthetic", "waveforms with closed-form integrals, for tests, demos and benchmarks", false,
         &open_synthetic},
    };
    return kinds;
}

std::unique_ptr<Sensor> open_sensor(const std::string& kind, const Options& options) {
    for (const auto& k : sensor_kinds()) {
        if (kind == k.name) return k.open(options);
    }
    std::string known;
    for (const auto& k : sensor_kinds()) known += std::string(known.empty() ? "" : ", ") + k.name;
    throw SensorError(ErrorCategory::Config, "unknown sensor kind '" + kind + "'",
                      "choose one of: " + known + ", replay (from a recorded samples file)");
}

}  // namespace greenprobe
