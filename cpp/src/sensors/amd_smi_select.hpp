// Which AMD GPUs the amd-gpu sensor (and its usage reader) measures: by default the ones this
// process can see, as ROCm decides it: ROCR_VISIBLE_DEVICES (the ROCr runtime's list), then
// HIP_VISIBLE_DEVICES, whose indices count among the GPUs ROCR_VISIBLE_DEVICES left visible. An
// explicit gpus= option overrides the environment.
//
// Entries: an index, or a UUID as `amd-smi list` prints it, with or without a "GPU-" prefix, whole
// or a unique prefix (case does not matter). Indices are taken in AMD SMI's order (ROCr's order
// on the systems where both follow the KFD topology); UUIDs are always exact, and the recorded
// mapping says which was used. As CUDA does, a list ends at its first empty or negative entry
// ("-1" hides every GPU).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "amd_smi_api.hpp"

namespace greenprobe::amdsmi {

// The variables that decide which GPUs a process sees; nullopt when unset.
struct VisibleEnv {
    std::optional<std::string> rocr_visible_devices, hip_visible_devices;
    static VisibleEnv from_process();
};

struct Selection {
    std::vector<unsigned> gpus;  // AMD SMI GPU indices, in AMD SMI's order, each once
    std::string source;          // "option gpus", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                                 // "ROCR_VISIBLE_DEVICES+HIP_VISIBLE_DEVICES" or "default"
    std::string given;           // the value(s) read, as "NAME='value'" (empty for default)
    std::string mapping;         // "exact: by UUID", "indices in AMD SMI's order: ..."; empty if none
    std::string note;            // entries ignored and why
};

// Throws SensorError naming the variable, the entry and the fix when a listed GPU is missing
// (NotFound), an entry is malformed or ambiguous (Config), or nothing is left visible (NotFound).
Selection select_gpus(const std::vector<KnownGpu>& known, const std::optional<std::string>& gpus_option,
                      const VisibleEnv& env);

}  // namespace greenprobe::amdsmi
