#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>

#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/registry.hpp"
#include "nvml_api.hpp"
#include "nvml_select.hpp"

namespace greenprobe {

struct NvmlUsage::Impl {
    nvml::Api api;
    std::vector<unsigned> indices;  // NVML indices of the chosen GPUs
    std::vector<nvml::Device> devices;
    std::vector<std::string> names, uuids;
    std::string selection;
    mutable std::mutex errors_mutex;
    mutable std::vector<GpuProcessError> errors;  // of the latest processes() call

    // A MIG-enabled GPU: each GPU instance's two GPM samples (the latest and the one to come) and its
    // busy time so far, by (NVML index, GPU instance id). An instance that is gone is let go.
    struct Instance {
        nvml::GpmSample latest = nullptr, next = nullptr;
        bool have = false;      // latest holds a sample
        int64_t latest_ns = 0;  // when latest was taken
        double busy_ns = 0.0;   // since since_ns
        int64_t since_ns = 0;   // when this count started: its first sample
        std::string uuid;       // of its MIG device: an instance made again under the same id differs
    };
    mutable std::mutex mig_mutex;
    mutable std::map<std::pair<unsigned, unsigned>, Instance> instances;
    mutable std::unique_ptr<nvml::GpmMetricsGet> metrics = std::make_unique<nvml::GpmMetricsGet>();

    bool mig_enabled(nvml::Device d) const {
        unsigned current = 0, pending = 0;
        return api.DeviceGetMigMode && api.DeviceGetMigMode(d, &current, &pending) == nvml::kSuccess && current == 1;
    }
    std::string mig_missing() const;
    // The newer per-process call answered NOT_SUPPORTED or a version it does not take: the older one
    // from then on.
    mutable std::atomic<bool> info_unsupported{false};
    // Each process's share of each of the driver's sample periods after since_us, into out (the newer
    // nvmlDeviceGetProcessesUtilizationInfo where the library has it and it answers, else
    // nvmlDeviceGetProcessUtilization); call: the call that answered. NOT_FOUND: no sample since.
    nvml::Return shares(nvml::Device d, uint64_t since_us, std::vector<nvml::ProcessUtilizationInfo>& out,
                        std::string& call) const;
    void free_instance(Instance& g) const {
        if (g.latest) api.GpmSampleFree(g.latest);
        if (g.next) api.GpmSampleFree(g.next);
        g = Instance{};
    }
    // Lets go of a GPU's instances (those gone, with keep; all of them, without: the GPU left MIG mode).
    void free_instances(unsigned index, const std::map<unsigned, std::pair<std::vector<uint32_t>, std::string>>* keep) const {
        for (auto it = instances.begin(); it != instances.end();) {
            if (it->first.first == index && (!keep || !keep->count(it->first.second))) {
                free_instance(it->second);
                it = instances.erase(it);
            } else {
                ++it;
            }
        }
    }
    // A MIG-enabled GPU's samples, one per process of each instance (mig_mutex held).
    void mig_processes(unsigned index, nvml::Device d, int64_t t, std::vector<GpuProcessSample>& out,
                       std::vector<GpuProcessError>& failed) const;
};

namespace {
// NVML's list calls: asked with no room, they answer INSUFFICIENT_SIZE and how many there are; asked
// again with room for those (and spare for ones that came meanwhile), they fill it. call(p, &n): n in,
// the room at p; out, how many. out holds those filled: none where a call answered with the count alone.
template <typename T, typename Call>
nvml::Return read_list(std::vector<T>& out, std::size_t spare, Call&& call) {
    unsigned n = 0;
    nvml::Return r = call(static_cast<T*>(nullptr), &n);
    bool filled = false;
    for (int tries = 0; r == nvml::kErrorInsufficientSize && tries < 3; ++tries) {
        out.resize(static_cast<std::size_t>(n) + spare);
        n = static_cast<unsigned>(out.size());
        r = call(out.data(), &n);
        filled = true;
    }
    out.resize(r == nvml::kSuccess && filled ? std::min<std::size_t>(n, out.size()) : 0);
    return r;
}
}  // namespace

nvml::Return NvmlUsage::Impl::shares(nvml::Device d, uint64_t since_us, std::vector<nvml::ProcessUtilizationInfo>& out,
                                     std::string& call) const {
    out.clear();
    if (api.DeviceGetProcessesUtilizationInfo && !info_unsupported.load(std::memory_order_relaxed)) {
        call = "nvmlDeviceGetProcessesUtilizationInfo";
        const nvml::Return r = read_list(out, 16, [&](nvml::ProcessUtilizationInfo* p, unsigned* n) {
            nvml::ProcessesUtilizationInfo info{nvml::kProcessesUtilizationInfoV1, *n, since_us, p};
            const nvml::Return got = api.DeviceGetProcessesUtilizationInfo(d, &info);
            *n = info.processSamplesCount;
            return got;
        });
        if (r != nvml::kErrorNotSupported && r != nvml::kErrorArgumentVersionMismatch &&
            r != nvml::kErrorFunctionNotFound) {
            return r;
        }
        info_unsupported.store(true, std::memory_order_relaxed);
    }
    call = "nvmlDeviceGetProcessUtilization";
    if (!api.DeviceGetProcessUtilization) return nvml::kErrorFunctionNotFound;
    std::vector<nvml::ProcessUtilizationSample> buf;
    const nvml::Return r = read_list(buf, 16, [&](nvml::ProcessUtilizationSample* p, unsigned* n) {
        return api.DeviceGetProcessUtilization(d, p, n, since_us);
    });
    for (const auto& x : buf) out.push_back({x.timeStamp, x.pid, x.smUtil, x.memUtil, x.encUtil, x.decUtil, 0, 0});
    return r;
}

// The symbols the MIG path needs that this NVML lacks, comma-separated ("" when it has them all).
std::string NvmlUsage::Impl::mig_missing() const {
    const std::pair<const char*, bool> needed[] = {
        {"nvmlDeviceGetMaxMigDeviceCount", api.DeviceGetMaxMigDeviceCount != nullptr},
        {"nvmlDeviceGetMigDeviceHandleByIndex", api.DeviceGetMigDeviceHandleByIndex != nullptr},
        {"nvmlDeviceGetGpuInstanceId", api.DeviceGetGpuInstanceId != nullptr},
        {"nvmlDeviceGetComputeRunningProcesses_v3", api.DeviceGetComputeRunningProcesses != nullptr},
        {"nvmlGpmSampleAlloc", api.GpmSampleAlloc != nullptr},
        {"nvmlGpmSampleFree", api.GpmSampleFree != nullptr},
        {"nvmlGpmMigSampleGet", api.GpmMigSampleGet != nullptr},
        {"nvmlGpmMetricsGet", api.GpmMetricsGet != nullptr},
    };
    std::string out;
    for (const auto& [name, ok] : needed) {
        if (!ok) out += (out.empty() ? "" : ", ") + std::string(name);
    }
    return out;
}

void NvmlUsage::Impl::mig_processes(unsigned index, nvml::Device d, int64_t t, std::vector<GpuProcessSample>& out,
                                    std::vector<GpuProcessError>& failed) const {
    const std::string mig = "MIG mode is on (NVML gives no per-process use there)";
    if (const std::string missing = mig_missing(); !missing.empty()) {
        failed.push_back({index, mig + " and this NVML lacks " + missing + " for each instance's use (GPM)"});
        return;
    }
    if (api.GpmQueryDeviceSupport) {
        nvml::GpmSupport support{nvml::kGpmSupportVersion, 0};
        const nvml::Return r = api.GpmQueryDeviceSupport(d, &support);
        if (r != nvml::kSuccess || !support.isSupportedDevice) {
            failed.push_back({index, mig + " and each instance's use needs GPM, which this GPU does not support" +
                                         (r != nvml::kSuccess ? " (nvmlGpmQueryDeviceSupport: " + api.error_string(r) + ")"
                                                              : " (Hopper or newer)")});
            return;
        }
    }
    // Its instances (a GPU instance of several compute instances shows as several MIG devices) and the
    // processes each one lists.
    unsigned slots = 0;
    nvml::Return r = api.DeviceGetMaxMigDeviceCount(d, &slots);
    if (r != nvml::kSuccess) {
        failed.push_back({index, "nvmlDeviceGetMaxMigDeviceCount: " + api.error_string(r)});
        return;
    }
    // GPU instance id -> (its processes, its MIG device's UUID)
    std::map<unsigned, std::pair<std::vector<uint32_t>, std::string>> found;
    std::vector<nvml::ProcessInfo> buf;
    for (unsigned slot = 0; slot < slots; ++slot) {
        nvml::Device m = nullptr;
        r = api.DeviceGetMigDeviceHandleByIndex(d, slot, &m);
        if (r == nvml::kErrorNotFound) continue;  // an empty slot
        unsigned gi = 0;
        if (r == nvml::kSuccess) r = api.DeviceGetGpuInstanceId(m, &gi);
        if (r != nvml::kSuccess) {
            failed.push_back({index, "MIG device " + std::to_string(slot) + ": " + api.error_string(r)});
            return;
        }
        r = read_list(buf, 8, [&](nvml::ProcessInfo* p, unsigned* n) {
            return api.DeviceGetComputeRunningProcesses(m, n, p);
        });
        if (r != nvml::kSuccess) {
            failed.push_back({index, "nvmlDeviceGetComputeRunningProcesses_v3 (GPU instance " + std::to_string(gi) +
                                         "): " + api.error_string(r)});
            return;
        }
        auto& [list, uuid] = found[gi];
        char id[nvml::kUuidBufferSize] = {};
        if (uuid.empty() && api.DeviceGetUUID && api.DeviceGetUUID(m, id, sizeof id) == nvml::kSuccess) uuid = id;
        for (const auto& x : buf) {
            if (std::find(list.begin(), list.end(), x.pid) == list.end()) list.push_back(x.pid);
        }
    }
    free_instances(index, &found);  // instances gone
    // Each instance's busy time: GRAPHICS_UTIL between its latest GPM sample and one taken now, where
    // they are over 100 ms apart (the counters' refresh), x the time between them. A sample or a
    // metric that fails starts the instance's count again (a later count_since_ns): the time since
    // its latest sample is not known, and the caller takes the next count as a base.
    for (const auto& [gi, seen] : found) {
        const auto& [list, uuid] = seen;
        Instance& g = instances[{index, gi}];
        if (g.uuid != uuid) {  // the same id, another instance: a count of its own
            free_instance(g);
            g.uuid = uuid;
        }
        if (!g.latest && api.GpmSampleAlloc(&g.latest) != nvml::kSuccess) g.latest = nullptr;
        if (!g.next && api.GpmSampleAlloc(&g.next) != nvml::kSuccess) g.next = nullptr;
        if (!g.latest || !g.next) continue;  // no room for samples now: tried again at the next read
        if (!g.have) {
            if (api.GpmMigSampleGet(d, gi, g.latest) != nvml::kSuccess) continue;
            g.have = true;
            g.latest_ns = g.since_ns = t;
            g.busy_ns = 0.0;
        } else if (t - g.latest_ns > nvml::kGpmMinIntervalNs) {
            r = api.GpmMigSampleGet(d, gi, g.next);
            nvml::GpmMetricsGet& q = *metrics;
            if (r == nvml::kSuccess) {
                q.version = nvml::kGpmMetricsGetVersion;
                q.numMetrics = 1;
                q.sample1 = g.latest;
                q.sample2 = g.next;
                q.metrics[0] = nvml::GpmMetric{};
                q.metrics[0].metricId = nvml::kGpmMetricGraphicsUtil;
                r = api.GpmMetricsGet(&q);
                if (r == nvml::kSuccess) r = q.metrics[0].nvmlReturn;
            }
            if (r != nvml::kSuccess || !std::isfinite(q.metrics[0].value)) {
                g.have = false;  // start again from a fresh sample
                continue;
            }
            g.busy_ns += std::clamp(q.metrics[0].value, 0.0, 100.0) / 100.0 * static_cast<double>(t - g.latest_ns);
            std::swap(g.latest, g.next);
            g.latest_ns = t;
        }
        GpuProcessSample x;
        x.index = index;
        x.t_ns = g.latest_ns;
        x.gfx_busy_ns = std::llround(g.busy_ns);
        x.count_since_ns = g.since_ns;
        x.gpu_instance = static_cast<int>(gi);
        if (list.empty()) out.push_back(x);  // pid 0: the instance lists no process
        for (uint32_t pid : list) {
            x.pid = pid;
            out.push_back(x);
        }
    }
}

NvmlUsage::NvmlUsage(const std::string& library, const std::optional<std::string>& gpus)
    : impl_(std::make_unique<Impl>()) {
    impl_->api = nvml::Api::load(library);
    auto& api = impl_->api;
    try {
        unsigned count = 0;
        const nvml::Return r = api.DeviceGetCount(&count);
        if (r != nvml::kSuccess) {
            throw SensorError(nvml::classify(r).category,
                              "nvmlDeviceGetCount failed in '" + api.path + "': " + api.error_string(r),
                              "check that nvidia-smi lists the GPUs");
        }
        // Every GPU NVML sees, then the ones the nvml sensor would measure.
        std::vector<nvml::KnownGpu> known(count);
        for (unsigned i = 0; i < count; ++i) {
            known[i].index = i;
            if (api.DeviceGetHandleByIndex(i, &known[i].handle) != nvml::kSuccess) known[i].handle = nullptr;
            char uuid[nvml::kUuidBufferSize] = {};
            if (known[i].handle && api.DeviceGetUUID &&
                api.DeviceGetUUID(known[i].handle, uuid, sizeof uuid) == nvml::kSuccess) {
                known[i].uuid = uuid;
            }
        }
        const nvml::Selection chosen = nvml::select_gpus(api, known, gpus, nvml::VisibleEnv::from_process());
        impl_->selection = chosen.source == "default" ? "every GPU NVML sees" : chosen.source + "='" + chosen.given + "'";
        for (const auto& g : chosen.gpus) {
            nvml::Device d = known[g.index].handle;
            char name[96] = {};
            if (d && api.DeviceGetName && api.DeviceGetName(d, name, sizeof(name)) != nvml::kSuccess) name[0] = '\0';
            impl_->indices.push_back(g.index);
            impl_->devices.push_back(d);
            impl_->names.emplace_back(name);
            impl_->uuids.push_back(known[g.index].uuid);
        }
    } catch (...) {
        api.Shutdown();
        api.unload();
        throw;
    }
}

NvmlUsage::~NvmlUsage() {
    if (impl_ && impl_->api.handle) {
        for (auto& [key, g] : impl_->instances) impl_->free_instance(g);
        impl_->api.Shutdown();
        impl_->api.unload();
    }
}

std::vector<std::string> NvmlUsage::names() const { return impl_->names; }

std::string NvmlUsage::selection() const { return impl_->selection; }

std::vector<GpuUsageReading> NvmlUsage::read() const {
    const auto& api = impl_->api;
    std::vector<GpuUsageReading> out;
    for (std::size_t i = 0; i < impl_->devices.size(); ++i) {
        GpuUsageReading g;
        g.index = impl_->indices[i];
        g.uuid = impl_->uuids[i];
        g.t_ns = now_ns();
        nvml::Device d = impl_->devices[i];
        if (!d) {
            g.error = "no handle for this device";
        } else {
            if (api.DeviceGetUtilizationRates) {
                nvml::Utilization u{};
                const nvml::Return r = api.DeviceGetUtilizationRates(d, &u);
                if (r == nvml::kSuccess) {
                    g.gpu_util_pct = static_cast<int>(u.gpu);
                    g.memory_util_pct = static_cast<int>(u.memory);
                } else {
                    g.error = "nvmlDeviceGetUtilizationRates: " + api.error_string(r);
                }
            } else {
                g.error = "this NVML has no nvmlDeviceGetUtilizationRates";
            }
            if (api.DeviceGetMemoryInfo) {
                nvml::Memory m{};
                const nvml::Return r = api.DeviceGetMemoryInfo(d, &m);
                if (r == nvml::kSuccess) {
                    g.memory_used_bytes = static_cast<int64_t>(m.used);
                    g.memory_total_bytes = static_cast<int64_t>(m.total);
                } else {
                    g.error += (g.error.empty() ? "" : "; ") + std::string("nvmlDeviceGetMemoryInfo: ") +
                               api.error_string(r);
                }
            }
        }
        out.push_back(std::move(g));
    }
    return out;
}

std::string NvmlUsage::process_support() const {
    const auto& api = impl_->api;
    if (api.DeviceGetProcessesUtilizationInfo || api.DeviceGetProcessUtilization || impl_->mig_missing().empty()) {
        return "";
    }
    return "this NVML has neither nvmlDeviceGetProcessesUtilizationInfo nor nvmlDeviceGetProcessUtilization (nor GPM "
           "for MIG instances)";
}

std::vector<GpuProcessError> NvmlUsage::process_errors() const {
    std::lock_guard<std::mutex> hold(impl_->errors_mutex);
    return impl_->errors;
}

std::vector<GpuProcessSample> NvmlUsage::processes(uint64_t since_us, int64_t at_ns) const {
    const auto& api = impl_->api;
    std::vector<GpuProcessSample> out;
    std::vector<nvml::ProcessUtilizationInfo> buf;
    std::vector<GpuProcessError> errors;
    const int64_t t = at_ns ? at_ns : now_ns();
    for (std::size_t i = 0; i < impl_->devices.size(); ++i) {
        nvml::Device d = impl_->devices[i];
        if (!d) {
            errors.push_back({impl_->indices[i], "no NVML handle for this GPU"});
            continue;
        }
        if (impl_->mig_enabled(d)) {  // per GPU instance, from GPM
            std::lock_guard<std::mutex> hold(impl_->mig_mutex);
            impl_->mig_processes(impl_->indices[i], d, t, out, errors);
            continue;
        }
        {  // not (or no longer) in MIG mode: its instances' samples go
            std::lock_guard<std::mutex> hold(impl_->mig_mutex);
            impl_->free_instances(impl_->indices[i], nullptr);
        }
        std::string call;
        const nvml::Return r = impl_->shares(d, since_us, buf, call);
        if (r == nvml::kErrorNotFound) continue;  // no sample since since_us: no process ran
        if (r != nvml::kSuccess) {  // GPU_IS_LOST, NOT_SUPPORTED, a library without the calls...: use unknown
            errors.push_back({impl_->indices[i], call + ": " + api.error_string(r)});
            continue;
        }
        for (std::size_t k = 0; k < buf.size(); ++k) {
            GpuProcessSample s;
            s.index = impl_->indices[i];
            s.pid = buf[k].pid;
            s.t_us = buf[k].timeStamp;
            s.sm_util_pct = buf[k].smUtil;
            s.memory_util_pct = buf[k].memUtil;
            out.push_back(s);
        }
    }
    std::lock_guard<std::mutex> hold(impl_->errors_mutex);
    impl_->errors = std::move(errors);
    return out;
}

std::unique_ptr<GpuUsageReader> open_nvml_usage(const Options& options) {
    return std::make_unique<NvmlUsage>(options.get("nvml_library", ""),
                                       options.has("gpus") ? std::optional<std::string>(options.get("gpus", ""))
                                                           : std::nullopt);
}

}  // namespace greenprobe
