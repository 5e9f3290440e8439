#include <mutex>

#include "amd_smi_api.hpp"
#include "amd_smi_select.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/registry.hpp"

namespace greenprobe {

struct AmdSmiUsage::Impl {
    amdsmi::Api api;
    std::vector<amdsmi::KnownGpu> gpus;  // the chosen ones
    std::string selection;
    mutable std::mutex errors_mutex;
    mutable std::vector<GpuProcessError> errors;  // of the latest processes() call
};

AmdSmiUsage::AmdSmiUsage(const std::string& library, const std::optional<std::string>& gpus)
    : impl_(std::make_unique<Impl>()) {
    impl_->api = amdsmi::Api::load(library);
    try {
        const std::vector<amdsmi::KnownGpu> known = amdsmi::enumerate_gpus(impl_->api);
        const amdsmi::Selection chosen = amdsmi::select_gpus(known, gpus, amdsmi::VisibleEnv::from_process());
        impl_->selection = chosen.source == "default" ? "every GPU AMD SMI sees" : chosen.given;
        for (unsigned i : chosen.gpus) impl_->gpus.push_back(known[i]);
    } catch (...) {
        impl_->api.shut_down_and_unload();
        throw;
    }
}

AmdSmiUsage::~AmdSmiUsage() {
    if (impl_) impl_->api.shut_down_and_unload();
}

std::vector<std::string> AmdSmiUsage::names() const {
    std::vector<std::string> out;
    for (const auto& g : impl_->gpus) out.push_back("amdgpu" + std::to_string(g.index) + (g.bus_id.empty() ? "" : " " + g.bus_id));
    return out;
}

std::string AmdSmiUsage::selection() const { return impl_->selection; }

namespace {

// The SMU reports a member it does not support as all ones (UINT16_MAX on some boards).
bool percent_ok(uint32_t v) { return v <= 100; }

void add_error(std::string& error, const std::string& what) { error += (error.empty() ? "" : "; ") + what; }

}  // namespace

std::vector<GpuUsageReading> AmdSmiUsage::read() const {
    const auto& api = impl_->api;
    std::vector<GpuUsageReading> out;
    for (const auto& g : impl_->gpus) {
        GpuUsageReading r;
        r.index = g.index;
        r.uuid = g.uuid;
        r.t_ns = now_ns();
        if (api.GetGpuActivity) {
            amdsmi::EngineUsage u{};
            const amdsmi::Status s = api.GetGpuActivity(g.handle, &u);
            if (s == amdsmi::kSuccess) {
                if (percent_ok(u.gfx_activity)) r.gpu_util_pct = static_cast<int>(u.gfx_activity);
                if (percent_ok(u.umc_activity)) r.memory_util_pct = static_cast<int>(u.umc_activity);
            } else {
                add_error(r.error, "amdsmi_get_gpu_activity: " + api.error_string(s));
            }
        } else {
            add_error(r.error, "this AMD SMI has no amdsmi_get_gpu_activity");
        }
        if (api.GetGpuMemoryUsage && api.GetGpuMemoryTotal) {
            uint64_t used = 0, total = 0;
            amdsmi::Status s = api.GetGpuMemoryUsage(g.handle, amdsmi::kMemTypeVram, &used);
            if (s == amdsmi::kSuccess) s = api.GetGpuMemoryTotal(g.handle, amdsmi::kMemTypeVram, &total);
            if (s == amdsmi::kSuccess) {
                r.memory_used_bytes = static_cast<int64_t>(used);
                r.memory_total_bytes = static_cast<int64_t>(total);
            } else {
                add_error(r.error, "amdsmi_get_gpu_memory_usage/total (VRAM): " + api.error_string(s));
            }
        }
        out.push_back(std::move(r));
    }
    return out;
}

std::string AmdSmiUsage::process_support() const { return impl_->api.process_list_support(); }

std::vector<GpuProcessError> AmdSmiUsage::process_errors() const {
    std::lock_guard<std::mutex> hold(impl_->errors_mutex);
    return impl_->errors;
}

std::vector<GpuProcessSample> AmdSmiUsage::processes(uint64_t since_us, int64_t at_ns) const {
    (void)since_us;  // the counts are cumulative: the caller keeps the previous ones
    const auto& api = impl_->api;
    std::vector<GpuProcessSample> out;
    if (!api.process_list_support().empty()) return out;
    std::vector<GpuProcessError> errors;
    std::vector<amdsmi::ProcessInfo> procs;
    for (const auto& g : impl_->gpus) {
        const amdsmi::Status s = api.read_processes(g.handle, procs);
        const int64_t t = at_ns ? at_ns : now_ns();
        if (s != amdsmi::kSuccess) {
            errors.push_back({g.index, "amdsmi_get_gpu_process_list: " + api.error_string(s)});
            continue;
        }
        for (const auto& p : procs) {
            GpuProcessSample x;
            x.index = g.index;
            x.pid = p.pid;
            x.t_ns = t;
            x.gfx_busy_ns = static_cast<int64_t>(p.gfx_ns & 0x7FFFFFFFFFFFFFFFull);
            out.push_back(x);
        }
    }
    std::lock_guard<std::mutex> hold(impl_->errors_mutex);
    impl_->errors = std::move(errors);
    return out;
}

std::unique_ptr<GpuUsageReader> open_amd_gpu_usage(const Options& options) {
    return std::make_unique<AmdSmiUsage>(options.get("amd_smi_library", ""),
                                         options.has("gpus") ? std::optional<std::string>(options.get("gpus", ""))
                                                             : std::nullopt);
}

}  // namespace greenprobe
