#include "greenprobe/registry.hpp"

namespace greenprobe {

namespace {

// Options several kinds read: one text, so that the option table stays consistent.
const SensorOption kProcRoot{"proc_root", "GREENPROBE_PROC_ROOT", "where /proc is mounted (stat, cpuinfo); default /proc"};
const SensorOption kSysfsCpuRoot{"sysfs_cpu_root", "GREENPROBE_SYSFS_CPU_ROOT",
                                 "the CPU topology tree; default /sys/devices/system/cpu"};
const SensorOption kCpuVendor{"cpu_vendor", "GREENPROBE_CPU_VENDOR", "intel | amd: overrides detection from cpuinfo"};

}  // namespace

const std::vector<SensorKind>& sensor_kinds() {
    static const std::vector<SensorKind> kinds = {
        {"nvml",
         "NVIDIA GPUs through NVML (loaded at run time): total-energy counter and instant power per GPU, and the "
         "module's power on Grace Hopper",
         AutoRole::Device, 10,
         "gpu<N> per GPU (N: NVML's index), with its UUID and PCI bus id; module<N> containing gpu<N> where the "
         "GPU reports its module's power (Grace Hopper: GPU + Grace CPU + memory, power only); a MIG instance is "
         "measured as its whole GPU, flagged shared",
         {{"nvml_library", "GREENPROBE_NVML_LIBRARY", "path or soname of libnvidia-ml.so.1"},
          {"nvml_min_period_us", "GREENPROBE_NVML_MIN_PERIOD_US",
           "NVML calls take a driver lock: never poll faster than this; default 1000"},
          {"gpus", "", "all | NVML indices, UUIDs (unique prefixes) and MIG ids, comma-separated; default: the GPUs "
                       "CUDA_VISIBLE_DEVICES (else NVIDIA_VISIBLE_DEVICES) lets this process see"}},
         // ACPI power meters measure the GPUs too (a Grace Hopper's module, a server's whole draw):
         // beside NVML, auto leaves them out, so that no total counts a GPU twice; name hwmon to read them.
         "power_meter", &open_nvml, &open_nvml_usage},
        {"rapl-perf",
         "RAPL energy counters through the kernel's perf_event power PMU (no root where perf_event_paranoid <= 0 or "
         "with CAP_PERFMON; one CPU per package)",
         AutoRole::Cpu, 10,
         "package-<P> per package; core-<P> and uncore-<P> inside it; dram-<P> beside it; psys containing the "
         "packages and DRAM where the platform has it (AMD: package-<P> only)",
         {{"perf_event_root", "GREENPROBE_PERF_EVENT_ROOT",
           "the perf PMU tree holding power/{type,cpumask,events}; default /sys/bus/event_source/devices"},
          kSysfsCpuRoot, kProcRoot,
          {"perf_helper", "GREENPROBE_PERF_HELPER",
           "greenprobe-perf-helper, asked for the events when this process may not open them (set up with `greenprobe "
           "setup-perf`); default: the one installed with the package; empty: never"}},
         "amd_energy,zenpower", &open_rapl_perf, nullptr},
        {"amd-gpu",
         "AMD GPUs through AMD SMI (loaded at run time): energy accumulator per GPU, checked at open against the "
         "power reading, which replaces a counter that stands still or runs backwards",
         AutoRole::Device, 20,
         "amdgpu<N> per GPU (N: AMD SMI's index among its GPUs), with its UUID and PCI address; an energy counter, or "
         "the power reading where the counter failed the open check (the channel's note says why)",
         {{"amd_smi_library", "GREENPROBE_AMD_SMI_LIBRARY",
           "path or soname of libamd_smi.so; default libamd_smi.so, then $ROCM_PATH/lib and /opt/rocm/lib"},
          {"gpus", "", "all | AMD SMI indices and UUIDs (unique prefixes too), comma-separated; default: the GPUs "
                       "ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES let this process see"},
          {"amd_counter_check_ms", "GREENPROBE_AMD_COUNTER_CHECK_MS",
           "the open check reads each energy counter twice this far apart and compares it with the power "
           "reading; default 50, 0 skips the check"}},
         "amdgpu", &open_amd_gpu, &open_amd_gpu_usage},
        {"rapl-msr", "Intel/AMD RAPL energy counters read from /dev/cpu/N/msr (one CPU per package)",
         AutoRole::Cpu, 20,
         "package-<P> per package; core-<P> and uncore-<P> inside it; dram-<P> beside it (Intel); psys "
         "containing the packages and DRAM where the platform has it",
         {{"msr_path", "GREENPROBE_MSR_PATH", "template of the MSR device, {cpu} replaced; default /dev/cpu/{cpu}/msr"},
          kCpuVendor, kProcRoot, kSysfsCpuRoot,
          {"msr_offset_scale", "GREENPROBE_MSR_OFFSET_SCALE",
           "byte offset = register x this: 1 for the msr device (default), 8 for a register dump"}},
         "amd_energy,zenpower", &open_rapl_msr, nullptr},
        {"rapl-powercap", "RAPL energy counters through the Linux powercap sysfs tree (every zone)",
         AutoRole::Cpu, 30,
         "package-<P> per package with its core, uncore and dram zones (dram beside the package, not in it); "
         "psys containing them where present",
         {{"powercap_root", "GREENPROBE_POWERCAP_ROOT", "the powercap tree; default /sys/class/powercap"}},
         "amd_energy,zenpower", &open_rapl_powercap, nullptr},
        {"hwmon",
         "the kernel's hardware-monitoring chips (/sys/class/hwmon): energy counters (i915, xe, amd_energy) and "
         "power readings (amdgpu, ACPI power meters such as Grace's, INA3221 rails on Jetson); counters preferred "
         "per chip",
         AutoRole::Device, 90,
         "<chip>-<label> per reading (the chip's name file, then its *_label lower-cased, e.g. amdgpu-ppt; "
         "<chip>-energy<N>/-power<N> for unlabelled channels of a chip with several, <chip> for its only one); "
         "chips sharing a name become <chip>-<PCI address> (from the device link) or <chip>-hwmon<N>. ACPI power "
         "meters are named by their power1_oem_info where they have one: NVIDIA Grace's grace-module-<S>, "
         "grace-socket-<S>, grace-cpu-<S>, grace-sysio-<S> per socket S, other text sanitised. Top level, except "
         "within a chip: amd_energy's Ecore in its Esocket, xe's pkg in card, an ina3221's rails in VDD_IN, a "
         "supply's pout in pin; and between Grace meters of one socket: cpu and sysio in socket (else in module), "
         "socket in module. A meter without oem text or with unknown text stays top level (the sensor's "
         "oem_info_<domain> says so)",
         {{"hwmon_root", "GREENPROBE_HWMON_ROOT", "the hwmon tree; default /sys/class/hwmon"},
          {"skip_chips", "", "chips to leave out: names or hwmon<N> directories, comma-separated; sensors=auto "
                             "adds the chips of the kinds that opened"},
          {"chips", "", "only these chips: names or hwmon<N> directories, comma-separated; default all"}},
         "", &open_hwmon, nullptr},
        {"cpu-estimate", "ESTIMATE: CPU power modelled from /proc/stat utilisation and a rated power",
         AutoRole::Estimate, 100, "cpu (estimated, not measured)",
         {kProcRoot,
          {"cpu_tdp_w", "GREENPROBE_CPU_TDP_W", "rated power of the CPUs in watts; default 10 W per logical CPU "
                                                "(15-280 W)"},
          {"idle_fraction", "", "idle power as a fraction of the rated power; default 0.3"}},
         "", &open_cpu_estimate, nullptr},
        {"synthetic", "waveforms with closed-form integrals, for tests, demos and benchmarks", AutoRole::None, 0,
         "synthetic0 or the domains option; domain i carries (i+1) x the waveform",
         {{"waveform", "", "constant | sine | square; default sine"},
          {"base_w", "", "mean power in watts"},
          {"amp_w", "", "amplitude in watts"},
          {"freq_hz", "", "frequency of sine and square"},
          {"duty", "", "square: share of the period at base_w + amp_w"},
          {"quantity", "", "energy (a cumulative counter, default) | power (the mean over each update period)"},
          {"update_us", "", "the value only moves at multiples of this period; default 1000 (0: every poll)"},
          {"resolution_j", "", "counter quantisation step in joules; default 0"},
          {"domains", "", "comma-separated domain names; default synthetic0"},
          {"t0_ns", "", "origin of the waveform on CLOCK_MONOTONIC; default the open time"}},
         "", &open_synthetic, nullptr},
    };
    return kinds;
}

namespace {

const SensorKind& find_kind(const std::string& kind) {
    for (const auto& k : sensor_kinds()) {
        if (kind == k.name) return k;
    }
    std::string known;
    for (const auto& k : sensor_kinds()) known += std::string(known.empty() ? "" : ", ") + k.name;
    throw SensorError(ErrorCategory::Config, "unknown sensor kind '" + kind + "'",
                      "choose one of: " + known + ", replay (from a recorded samples file)");
}

}  // namespace

std::unique_ptr<Sensor> open_sensor(const std::string& kind, const Options& options) {
    return find_kind(kind).open(options);
}

std::unique_ptr<GpuUsageReader> open_gpu_usage(const std::string& kind, const Options& options) {
    const SensorKind& k = find_kind(kind);
    if (!k.open_usage) {
        std::string gpu_kinds;
        for (const auto& other : sensor_kinds()) {
            if (other.open_usage) gpu_kinds += std::string(gpu_kinds.empty() ? "" : ", ") + other.name;
        }
        throw SensorError(ErrorCategory::Config, "sensor kind '" + kind + "' reports no GPU utilisation",
                          "ask a GPU kind: " + gpu_kinds);
    }
    return k.open_usage(options);
}

}  // namespace greenprobe
