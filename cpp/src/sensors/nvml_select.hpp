// Which GPUs the nvml sensor measures: by default the ones this process can see
// (CUDA_VISIBLE_DEVICES, else NVIDIA_VISIBLE_DEVICES), matched to NVML's devices by UUID; an
// explicit gpus= option overrides the environment.
//
// Entries: an index; a GPU UUID or a unique prefix of one ("GPU-8f3a", as CUDA accepts); a MIG
// instance ("MIG-<uuid>", or "MIG-GPU-<uuid>/<gi>/<ci>" of older drivers; "<gpu>:<mig>" in
// NVIDIA_VISIBLE_DEVICES). A MIG instance is measured as its whole parent GPU, flagged shared.
//
// Indices: NVML numbers GPUs by PCI bus id. CUDA does so too only with CUDA_DEVICE_ORDER=PCI_BUS_ID;
// its default (FASTEST_FIRST) order cannot be known without CUDA, so CUDA indices are then taken in
// NVML's order and the mapping is recorded as ambiguous. UUIDs are always exact. The container
// toolkit's NVIDIA_VISIBLE_DEVICES indices are the host's NVML indices.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "nvml_api.hpp"

namespace greenprobe::nvml {

struct KnownGpu {  // one GPU as NVML enumerates it
    unsigned index = 0;
    Device handle = nullptr;  // null when NVML gave none
    std::string uuid;         // empty when NVML could not say
};

// The variables that decide which GPUs a process sees; nullopt when unset.
struct VisibleEnv {
    std::optional<std::string> cuda_visible_devices, nvidia_visible_devices, cuda_device_order;
    static VisibleEnv from_process();
};

struct ChosenGpu {
    unsigned index = 0;            // NVML index
    std::vector<std::string> mig;  // the MIG instances it was chosen through (measured whole: shared)
};

struct Selection {
    std::vector<ChosenGpu> gpus;  // NVML order, each GPU once
    std::string source;           // "option gpus", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES" or "default"
    std::string given;            // the value that was read
    std::string mapping;          // how indices became NVML indices ("exact: ...", "ambiguous: ..."); empty if none
    std::string note;             // entries ignored and why, or what a special value meant
};

// gpus_option: the sensor's gpus= option where given (all, or a list of NVML indices, UUIDs, MIG ids).
// Throws SensorError naming the entry and the fix when a listed device is not found, an entry is
// malformed or ambiguous, or nothing is left visible.
Selection select_gpus(const Api& api, const std::vector<KnownGpu>& known, const std::optional<std::string>& gpus_option,
                      const VisibleEnv& env);

}  // namespace greenprobe::nvml
