// GPU utilisation and memory, read on demand at a low rate next to the energy samples: what the
// study records per run, as it does CPU use. Every GPU sensor kind offers a GpuUsageReader (its
// registry row's open_usage) for the GPUs it measures, so that every GPU kind reports them the same
// way.
//
// NVML (NvmlUsage, the same dlopen path as the NVML sensor): NVML's utilisation is the share of its last sample period (1/6 s to 1 s, by product)
// in which a kernel ran (gpu) or device memory was accessed (memory): a coarse figure by nature.
//
// Which GPUs: the ones the nvml sensor measures, chosen the same way (nvml_select.hpp): the gpus
// option where given, else those this process can see through CUDA_VISIBLE_DEVICES or
// NVIDIA_VISIBLE_DEVICES, else every GPU NVML sees. Another job's GPUs stay out of the figures.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace greenprobe {

struct GpuUsageReading {
    unsigned index = 0;              // the kind's device index (NVML's index for nvml)
    std::string uuid;                // NVML's UUID ("GPU-..."); empty if NVML could not say
    int64_t t_ns = 0;                // CLOCK_MONOTONIC when read
    int gpu_util_pct = -1;           // -1: not supported by this device or driver
    int memory_util_pct = -1;
    int64_t memory_used_bytes = -1;
    int64_t memory_total_bytes = -1;
    std::string error;               // why a reading is missing (empty when all went well)
};

// One process's use of one GPU, for attributing a GPU's energy to processes, in one of three forms:
//   NVML: its share of one of the driver's sample periods (nvmlDeviceGetProcessUtilization): t_us,
//       sm_util_pct, memory_util_pct; gfx_busy_ns is -1.
//   AMD SMI: its GFX engine time on the GPU so far (amdsmi_get_gpu_process_list's engine_usage.gfx),
//       a cumulative count read at t_ns: gfx_busy_ns; t_us and the shares are 0.
//   NVML on a MIG-enabled GPU, which gives no per-process use: the GPU instance the process runs in
//       (gpu_instance) and that instance's busy time since the reader first sampled it, a cumulative
//       count at the instant t_ns of its latest GPM sample (GRAPHICS_UTIL x the time between samples,
//       nvmlGpmMigSampleGet): gfx_busy_ns, counted since count_since_ns (a sample that fails, or an
//       instance made again under its id, starts the count again). One sample per process the instance lists
//       (nvmlDeviceGetComputeRunningProcesses_v3 on its MIG device), all with the instance's count; pid 0
//       where it lists none. How the instance's time is split among its processes is not known.
struct GpuProcessSample {
    unsigned index = 0;      // the kind's device index
    uint32_t pid = 0;
    uint64_t t_us = 0;       // NVML: the driver's timestamp (µs, its CPU clock) at the end of the period
    unsigned sm_util_pct = 0;
    unsigned memory_util_pct = 0;
    int64_t t_ns = 0;        // AMD SMI: CLOCK_MONOTONIC when read (NVML: 0)
    int64_t gfx_busy_ns = -1;  // cumulative GFX engine ns (AMD SMI, a MIG instance); -1: a share per period
    int gpu_instance = -1;     // the MIG GPU instance id (NVML on a MIG-enabled GPU); -1: none
    int64_t count_since_ns = 0;  // a MIG instance's: when its count started (later where it started again)
};

// A GPU whose per-process use could not be read at the latest processes() call, and why.
struct GpuProcessError {
    unsigned index = 0;  // the kind's device index
    std::string error;   // "nvmlDeviceGetProcessUtilization: NVML error 3 (Not Supported)", ...
};

class GpuUsageReader {
  public:
    virtual ~GpuUsageReader() = default;
    virtual std::string kind() const = 0;                  // the sensor kind: "nvml", ...
    virtual std::vector<std::string> names() const = 0;    // of the chosen GPUs, in the kind's order
    virtual std::string selection() const = 0;             // how they were chosen, in words
    virtual std::vector<GpuUsageReading> read() const = 0;
    // Per-process samples of every chosen GPU: NVML's after since_us (the driver's timestamps), AMD
    // SMI's cumulative counts now (since_us unused), a MIG instance's at its latest GPM sample. at_ns:
    // the instant of this read on the sampler's clock (0: now, CLOCK_MONOTONIC), where a reading is
    // dated by the caller (a virtual clock); a GPM sample is taken only where the previous one of its
    // instance is 100 ms or more before it. A kind or library without them gives none, and
    // process_support() says why in words ("" when it gives them). A GPU that answers an error (a
    // MIG-enabled GPU without GPM, a lost GPU, ...) gives none either, and process_errors() names it:
    // its processes' use is unknown then, not nil. (NVML's NOT_FOUND, no sample since since_us, is no
    // error.)
    virtual std::vector<GpuProcessSample> processes(uint64_t since_us, int64_t at_ns = 0) const {
        (void)since_us;
        (void)at_ns;
        return {};
    }
    virtual std::string process_support() const { return kind() + " gives no per-process use"; }
    // The GPUs that answered an error at the latest processes() call, and what they answered.
    virtual std::vector<GpuProcessError> process_errors() const { return {}; }
};

class NvmlUsage final : public GpuUsageReader {
  public:
    // Loads NVML (soname libnvidia-ml.so.1 unless a path is given) and chooses the GPUs as the nvml
    // sensor does (gpus: its gpus= option, all or a list of NVML indices, UUIDs and MIG ids; nullopt:
    // the environment); throws SensorError with the fix (a listed GPU missing, none visible).
    explicit NvmlUsage(const std::string& library, const std::optional<std::string>& gpus = std::nullopt);
    ~NvmlUsage() override;
    NvmlUsage(const NvmlUsage&) = delete;
    NvmlUsage& operator=(const NvmlUsage&) = delete;

    std::string kind() const override { return "nvml"; }
    std::vector<std::string> names() const override;  // in NVML order
    std::string selection() const override;           // "CUDA_VISIBLE_DEVICES='...'", ...
    std::vector<GpuUsageReading> read() const override;
    std::vector<GpuProcessSample> processes(uint64_t since_us, int64_t at_ns = 0) const override;
    std::string process_support() const override;
    std::vector<GpuProcessError> process_errors() const override;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// AMD SMI (AmdSmiUsage, the same dlopen path as the amd-gpu sensor): gpu_util_pct is the GFX
// engine's activity and memory_util_pct the memory controller's (UMC), both % as the SMU reports
// them; memory is VRAM in use and in total. The GPUs: those the amd-gpu sensor measures, chosen the
// same way (amd_smi_select.hpp): its gpus option, else ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES,
// else every GPU AMD SMI sees. Per-process use: each process's cumulative GFX engine time per GPU
// (amdsmi_get_gpu_process_list, read in the layout of the library's version: amd_smi_api.hpp).
class AmdSmiUsage final : public GpuUsageReader {
  public:
    // Loads AMD SMI (libamd_smi.so unless a path is given); throws SensorError with the fix.
    explicit AmdSmiUsage(const std::string& library, const std::optional<std::string>& gpus = std::nullopt);
    ~AmdSmiUsage() override;
    AmdSmiUsage(const AmdSmiUsage&) = delete;
    AmdSmiUsage& operator=(const AmdSmiUsage&) = delete;

    std::string kind() const override { return "amd-gpu"; }
    std::vector<std::string> names() const override;  // "amdgpu<N> <PCI address>", in AMD SMI order
    std::string selection() const override;           // "ROCR_VISIBLE_DEVICES='...'", ...
    std::vector<GpuUsageReading> read() const override;
    std::vector<GpuProcessSample> processes(uint64_t since_us, int64_t at_ns = 0) const override;
    std::string process_support() const override;
    std::vector<GpuProcessError> process_errors() const override;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace greenprobe
