#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "nvml_api.hpp"

namespace greenprobe {

struct GpuUsage::Impl {
    nvml::Api api;
    std::vector<nvml::Device> devices;
    std::vector<std::string> names;
};

GpuUsage::GpuUsage(const std::string& library) : impl_(std::make_unique<Impl>()) {
    impl_->api = nvml::Api::load(library);
    auto& api = impl_->api;
    unsigned count = 0;
    const nvml::Return r = api.DeviceGetCount(&count);
    if (r != nvml::kSuccess) {
        const std::string msg = "nvmlDeviceGetCount failed in '" + api.path + "': " + api.error_string(r);
        api.Shutdown();
        api.unload();
        throw SensorError(nvml::classify(r).category, msg, "check that nvidia-smi lists the GPUs");
    }
    for (unsigned i = 0; i < count; ++i) {
        nvml::Device d = nullptr;
        if (api.DeviceGetHandleByIndex(i, &d) != nvml::kSuccess) d = nullptr;
        char name[96] = {};
        if (d && api.DeviceGetName && api.DeviceGetName(d, name, sizeof(name)) != nvml::kSuccess) name[0] = '\0';
        impl_->devices.push_back(d);
        impl_->names.emplace_back(name);
    }
}

GpuUsage::~GpuUsage() {
    if (impl_ && impl_->api.handle) {
        impl_->api.Shutdown();
        impl_->api.unload();
    }
}

std::vector<std::string> GpuUsage::names() const { return impl_->names; }

std::vector<GpuUsageReading> GpuUsage::read() const {
    const auto& api = impl_->api;
    std::vector<GpuUsageReading> out;
    for (unsigned i = 0; i < impl_->devices.size(); ++i) {
        GpuUsageReading g;
        g.index = i;
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

}  // namespace greenprobe
