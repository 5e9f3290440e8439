#include "nvml_select.hpp"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <set>

#include "text.hpp"

namespace greenprobe::nvml {
namespace {

using text::parse_integer;
using text::split;
using text::trim;


const char* kListFix =
    "list GPUs as `nvidia-smi -L` shows them (an index, GPU-<uuid> or MIG-<uuid>), or pass gpus=all "
    "(sensors=['nvml:gpus=all']) to measure every GPU NVML sees";

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::string known_list(const std::vector<KnownGpu>& known) {
    std::string s;
    for (const auto& g : known) {
        s += (s.empty() ? "" : ", ") + std::to_string(g.index) + (g.uuid.empty() ? "" : " " + g.uuid);
    }
    return "NVML sees " + std::to_string(known.size()) + " GPU" + (known.size() == 1 ? "" : "s") +
           (known.empty() ? "" : ": " + s);
}

class Resolver {
  public:
    Resolver(const Api& api, const std::vector<KnownGpu>& known, std::string where)
        : api_(api), known_(known), where_(std::move(where)) {}

    // An NVML index.
    unsigned by_index(long long i, const std::string& entry) const {
        if (i < 0 || static_cast<unsigned long long>(i) >= known_.size()) {
            throw SensorError(ErrorCategory::NotFound,
                              where_ + " lists GPU " + entry + ", which NVML does not have (" + known_list(known_) + ")",
                              kListFix);
        }
        return static_cast<unsigned>(i);
    }

    // A GPU UUID, or a prefix of exactly one (CUDA accepts unique prefixes; NVML wants the whole UUID).
    unsigned by_gpu_uuid(const std::string& uuid, const std::string& entry) const {
        std::vector<unsigned> hits;
        for (const auto& g : known_) {
            if (!g.uuid.empty() && starts_with(g.uuid, uuid.c_str())) hits.push_back(g.index);
        }
        if (hits.size() == 1) return hits[0];
        if (hits.size() > 1) {
            std::string which;
            for (unsigned i : hits) which += (which.empty() ? "" : ", ") + known_[i].uuid;
            throw SensorError(ErrorCategory::Config, where_ + ": '" + entry + "' is a prefix of several GPUs' UUIDs (" + which + ")",
                              "give more of the UUID, as `nvidia-smi -L` prints it");
        }
        if (api_.DeviceGetHandleByUUID) {
            Device h = nullptr;
            if (api_.DeviceGetHandleByUUID(uuid.c_str(), &h) == kSuccess && h) return index_of(h, entry);
        } else if (!api_.DeviceGetUUID) {
            throw SensorError(ErrorCategory::Unsupported,
                              where_ + " names GPU " + entry + " by UUID, but NVML '" + api_.path +
                                  "' has neither nvmlDeviceGetUUID nor nvmlDeviceGetHandleByUUID",
                              "update the NVIDIA driver, or name GPUs by index with CUDA_DEVICE_ORDER=PCI_BUS_ID, or pass gpus=all");
        }
        throw SensorError(ErrorCategory::NotFound, where_ + " lists " + entry + ", which NVML does not know (" + known_list(known_) + ")",
                          kListFix);
    }

    // "MIG-<uuid>": the MIG device's parent GPU.
    unsigned by_mig_uuid(const std::string& entry) const {
        if (!api_.DeviceGetHandleByUUID || !api_.DeviceGetDeviceHandleFromMigDeviceHandle) {
            throw SensorError(ErrorCategory::Unsupported,
                              where_ + " lists MIG instance " + entry + ", but NVML '" + api_.path +
                                  "' lacks nvmlDeviceGetHandleByUUID or nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
                              "update the NVIDIA driver (R470 or newer), or list the parent GPU's UUID (nvidia-smi -L)");
        }
        Device mig = nullptr, parent = nullptr;
        Return r = api_.DeviceGetHandleByUUID(entry.c_str(), &mig);
        if (r != kSuccess || !mig) {
            throw SensorError(ErrorCategory::NotFound,
                              where_ + " lists MIG instance " + entry + ", which NVML does not know: " + api_.error_string(r),
                              "list MIG instances as `nvidia-smi -L` shows them (MIG-<uuid>), or pass gpus=all");
        }
        r = api_.DeviceGetDeviceHandleFromMigDeviceHandle(mig, &parent);
        if (r != kSuccess || !parent) {
            throw SensorError(ErrorCategory::NotFound,
                              where_ + ": NVML cannot say which GPU MIG instance " + entry + " is part of: " + api_.error_string(r),
                              "list the parent GPU's UUID (nvidia-smi -L) instead");
        }
        return index_of(parent, entry);
    }

    // Any entry of a list; mig is set when the entry is a MIG instance. Throws on what it cannot resolve.
    unsigned resolve(const std::string& entry, bool toolkit, std::string& mig) const {
        long long i = 0;
        mig.clear();
        if (starts_with(entry, "MIG-GPU-")) {  // MIG-GPU-<uuid>/<gi>/<ci> (drivers before R470)
            mig = entry;
            return by_gpu_uuid(entry.substr(4, entry.find('/') == std::string::npos ? std::string::npos : entry.find('/') - 4), entry);
        }
        if (starts_with(entry, "MIG-")) {
            mig = entry;
            return by_mig_uuid(entry);
        }
        if (starts_with(entry, "GPU-")) return by_gpu_uuid(entry, entry);
        const auto colon = entry.find(':');
        long long m = 0;
        if (toolkit && colon != std::string::npos && parse_integer(entry.substr(0, colon), i) &&
            parse_integer(entry.substr(colon + 1), m) && i >= 0 && m >= 0) {  // <gpu>:<mig> (container toolkit)
            mig = entry;
            return by_index(i, entry);
        }
        if (parse_integer(entry, i)) return by_index(i, entry);
        throw SensorError(ErrorCategory::Config,
                          where_ + ": '" + entry + "' is neither a GPU index, a GPU-<uuid> nor a MIG id", kListFix);
    }

  private:
    unsigned index_of(Device h, const std::string& entry) const {
        unsigned idx = 0;
        if (api_.DeviceGetIndex && api_.DeviceGetIndex(h, &idx) == kSuccess && idx < known_.size()) return idx;
        for (const auto& g : known_) {
            if (g.handle == h) return g.index;
        }
        if (api_.DeviceGetUUID) {
            char buf[kUuidBufferSize] = {};
            if (api_.DeviceGetUUID(h, buf, sizeof buf) == kSuccess) {
                for (const auto& g : known_) {
                    if (!g.uuid.empty() && g.uuid == buf) return g.index;
                }
            }
        }
        throw SensorError(ErrorCategory::NotFound, where_ + ": NVML found " + entry + " but not its index (" + known_list(known_) + ")",
                          kListFix);
    }

    const Api& api_;
    const std::vector<KnownGpu>& known_;
    std::string where_;
};

struct Pick {
    unsigned index;
    std::string mig;
    bool by_index;
};

std::vector<ChosenGpu> merge(const std::vector<Pick>& picks) {
    std::map<unsigned, ChosenGpu> by;
    for (const auto& p : picks) {
        auto& c = by[p.index];
        c.index = p.index;
        if (!p.mig.empty() && std::find(c.mig.begin(), c.mig.end(), p.mig) == c.mig.end()) c.mig.push_back(p.mig);
    }
    std::vector<ChosenGpu> out;
    for (auto& [i, c] : by) out.push_back(std::move(c));
    return out;
}

std::vector<ChosenGpu> everything(const std::vector<KnownGpu>& known) {
    std::vector<ChosenGpu> out;
    for (const auto& g : known) out.push_back(ChosenGpu{g.index, {}});
    return out;
}

SensorError nothing_visible(const std::string& what, const std::string& fix) {
    return SensorError(ErrorCategory::NotFound, what + ": nvml has no GPU to measure", fix);
}

Selection from_option(const Api& api, const std::vector<KnownGpu>& known, const std::string& value) {
    Selection s;
    s.source = "option gpus";
    s.given = value;
    if (trim(value) == "all") {
        s.gpus = everything(known);
        return s;
    }
    const Resolver r(api, known, "option gpus='" + value + "'");
    std::vector<Pick> picks;
    for (const auto& e : split(value, ',')) {
        if (e.empty()) {
            throw SensorError(ErrorCategory::Config, "option gpus='" + value + "' has an empty entry",
                              "use gpus=all, or NVML indices, GPU-<uuid> or MIG ids separated by commas (gpus=0,2)");
        }
        std::string mig;
        picks.push_back(Pick{r.resolve(e, false, mig), mig, false});
    }
    s.gpus = merge(picks);
    s.mapping = "exact: NVML indices and UUIDs";
    return s;
}

Selection from_cuda(const Api& api, const std::vector<KnownGpu>& known, const std::string& value, const VisibleEnv& env) {
    Selection s;
    s.source = "CUDA_VISIBLE_DEVICES";
    s.given = value;
    const std::string where = "CUDA_VISIBLE_DEVICES='" + value + "'";
    const Resolver r(api, known, where);
    std::vector<Pick> picks;
    const auto entries = split(value, ',');
    for (std::size_t k = 0; k < entries.size(); ++k) {
        const std::string& e = entries[k];
        long long i = 0;
        // CUDA stops at the first invalid entry: "-1" (the usual way to hide every GPU) or an empty one.
        if (e.empty() || (parse_integer(e, i) && i < 0)) {
            if (k + 1 < entries.size() || !e.empty()) {
                s.note = "entries from '" + e + "' (entry " + std::to_string(k) + ") on are ignored, as CUDA ignores them";
            }
            break;
        }
        std::string mig;
        const bool index = parse_integer(e, i);
        picks.push_back(Pick{r.resolve(e, false, mig), mig, index});
    }
    if (picks.empty()) {
        throw nothing_visible(where + " makes no GPU visible to this process",
                              "set CUDA_VISIBLE_DEVICES to the GPUs the work runs on (indices or GPU-<uuid>), or pass "
                              "gpus=all (sensors=['nvml:gpus=all']) to measure every GPU NVML sees");
    }
    s.gpus = merge(picks);
    const bool any_index = std::any_of(picks.begin(), picks.end(), [](const Pick& p) { return p.by_index; });
    if (!any_index) {
        s.mapping = "exact: by UUID";
    } else if (known.size() == 1) {
        s.mapping = "exact: NVML sees one GPU";
    } else if (env.cuda_device_order && trim(*env.cuda_device_order) == "PCI_BUS_ID") {
        s.mapping = "exact: CUDA_DEVICE_ORDER=PCI_BUS_ID numbers GPUs as NVML does (by PCI bus id)";
    } else {
        s.mapping = "ambiguous: CUDA_DEVICE_ORDER is not PCI_BUS_ID, so CUDA numbers GPUs fastest first, an order NVML "
                    "cannot know; the indices were taken in NVML's (PCI bus) order. Set CUDA_DEVICE_ORDER=PCI_BUS_ID "
                    "or list GPU UUIDs to make this exact";
    }
    return s;
}

Selection from_toolkit(const Api& api, const std::vector<KnownGpu>& known, const std::string& value) {
    Selection s;
    s.source = "NVIDIA_VISIBLE_DEVICES";
    s.given = value;
    const std::string v = trim(value);
    const std::string where = "NVIDIA_VISIBLE_DEVICES='" + value + "'";
    if (v == "all") {
        s.gpus = everything(known);
        return s;
    }
    if (v == "none") {
        throw nothing_visible(where + " (the container runtime gave this container no GPU)",
                              "start the container with the GPUs the work runs on (--gpus, NVIDIA_VISIBLE_DEVICES=all or "
                              "a list), or pass gpus=all");
    }
    if (v.empty() || v == "void") {
        s.gpus = everything(known);
        s.note = "NVIDIA_VISIBLE_DEVICES='" + v + "' leaves the choice to whoever started the process: every GPU NVML sees";
        return s;
    }
    // The toolkit numbers the host's GPUs as NVML does. Inside a container NVML sees only the GPUs it
    // was given, numbered from 0: when it sees exactly as many as were listed by index, host index h is
    // NVML index (rank of h among those listed).
    const auto entries = split(v, ',');
    std::vector<long long> host;
    bool all_indices = true;
    for (const auto& e : entries) {
        long long i = 0, m = 0;
        const auto colon = e.find(':');
        const std::string gpu = colon == std::string::npos ? e : e.substr(0, colon);
        if (parse_integer(gpu, i) && i >= 0 && (colon == std::string::npos || parse_integer(e.substr(colon + 1), m))) {
            host.push_back(i);
        } else {
            all_indices = false;
        }
    }
    std::set<long long> distinct(host.begin(), host.end());
    const bool renumbered = all_indices && distinct.size() == known.size();
    const Resolver r(api, known, where);
    std::vector<Pick> picks;
    for (const auto& e : entries) {
        if (e.empty()) {
            throw SensorError(ErrorCategory::Config, where + " has an empty entry", kListFix);
        }
        std::string mig;
        if (renumbered) {
            const auto colon = e.find(':');
            long long h = 0;
            parse_integer(colon == std::string::npos ? e : e.substr(0, colon), h);
            const auto rank = static_cast<unsigned>(std::distance(distinct.begin(), distinct.find(h)));
            picks.push_back(Pick{rank, colon == std::string::npos ? "" : e, true});
        } else {
            picks.push_back(Pick{r.resolve(e, true, mig), mig, !starts_with(e, "GPU-") && !starts_with(e, "MIG-")});
        }
    }
    s.gpus = merge(picks);
    if (renumbered) {
        s.mapping = "exact: NVML sees exactly the " + std::to_string(known.size()) +
                    " GPUs listed (in a container: the runtime's choice, numbered from 0 in host order)";
    } else if (std::any_of(picks.begin(), picks.end(), [](const Pick& p) { return p.by_index; })) {
        s.mapping = "exact on the host (the container toolkit numbers GPUs as NVML does); inside a container that "
                    "renumbered its GPUs, list UUIDs instead";
    } else {
        s.mapping = "exact: by UUID";
    }
    return s;
}

}  // namespace

VisibleEnv VisibleEnv::from_process() {
    VisibleEnv e;
    if (const char* v = std::getenv("CUDA_VISIBLE_DEVICES")) e.cuda_visible_devices = v;
    if (const char* v = std::getenv("NVIDIA_VISIBLE_DEVICES")) e.nvidia_visible_devices = v;
    if (const char* v = std::getenv("CUDA_DEVICE_ORDER")) e.cuda_device_order = v;
    return e;
}

Selection select_gpus(const Api& api, const std::vector<KnownGpu>& known, const std::optional<std::string>& gpus_option,
                      const VisibleEnv& env) {
    if (gpus_option) return from_option(api, known, *gpus_option);
    if (env.cuda_visible_devices) return from_cuda(api, known, *env.cuda_visible_devices, env);
    if (env.nvidia_visible_devices) return from_toolkit(api, known, *env.nvidia_visible_devices);
    Selection s;
    s.source = "default";
    s.gpus = everything(known);
    s.note = "neither CUDA_VISIBLE_DEVICES nor NVIDIA_VISIBLE_DEVICES is set: every GPU NVML sees";
    return s;
}

}  // namespace greenprobe::nvml
