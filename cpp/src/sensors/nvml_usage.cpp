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
};

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
    return impl_->api.DeviceGetProcessUtilization ? "" : "this NVML has no nvmlDeviceGetProcessUtilization";
}

std::vector<GpuProcessError> NvmlUsage::process_errors() const {
    std::lock_guard<std::mutex> hold(impl_->errors_mutex);
    return impl_->errors;
}

std::vector<GpuProcessSample> NvmlUsage::processes(uint64_t since_us) const {
    const auto& api = impl_->api;
    std::vector<GpuProcessSample> out;
    if (!api.DeviceGetProcessUtilization) return out;
    std::vector<nvml::ProcessUtilizationSample> buf;
    std::vector<GpuProcessError> errors;
    for (std::size_t i = 0; i < impl_->devices.size(); ++i) {
        nvml::Device d = impl_->devices[i];
        if (!d) {
            errors.push_back({impl_->indices[i], "no NVML handle for this GPU"});
            continue;
        }
        unsigned int n = 0;
        nvml::Return r = api.DeviceGetProcessUtilization(d, nullptr, &n, since_us);
        for (int tries = 0; r == nvml::kErrorInsufficientSize && tries < 3; ++tries) {
            buf.resize(static_cast<std::size_t>(n) + 16);  // room for samples that came meanwhile
            n = static_cast<unsigned int>(buf.size());
            r = api.DeviceGetProcessUtilization(d, buf.data(), &n, since_us);
        }
        if (r == nvml::kErrorNotFound) continue;  // no sample since since_us: no process ran
        if (r != nvml::kSuccess) {  // NOT_SUPPORTED (a MIG-enabled GPU), GPU_IS_LOST, ...: use unknown
            errors.push_back({impl_->indices[i], "nvmlDeviceGetProcessUtilization: " + api.error_string(r)});
            continue;
        }
        for (unsigned k = 0; k < n && k < buf.size(); ++k) {
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
