// nvml: per GPU, the total-energy counter (mJ, Volta and newer) and power, read in one
// nvmlDeviceGetFieldValues call (fields 83 and 186) where the driver supports it, else through
// nvmlDeviceGetTotalEnergyConsumption and nvmlDeviceGetPowerUsage (a 1-s average on Ampere+
// except GA100: recorded in the channel's averaging window).
//
// Grace Hopper: where the GPU reports power at module scope (field 186 with scopeId 1,
// NVML_POWER_SCOPE_MODULE: GPU + Grace CPU + memory), a power channel module<N> beside gpu<N>, read in
// the same call; gpu<N>'s parent_domain is module<N>, whose energy contains it. Probed once at open;
// info() says per GPU whether it is there and why not. Assumed one GPU per module (GH200); a board
// whose GPUs share one CPU (GB200: two GPUs, one Grace) would report that CPU in each GPU's module,
// which is not verified against hardware here.
//
// Dating: field values carry NVML's timestamp, the CPU's wall clock when NVML fetched the value (not
// when the GPU's sensor updated it). Mapped to CLOCK_MONOTONIC around each call (nvml_stamp.hpp), it
// dates each reading (Reading::t_ns) at its fetch instead of at the poll's middle, which a slow
// driver call (hundreds of µs) or a poll of several GPUs puts off; a timestamp outside its call, or
// a wall clock stepped during it, is rejected (the poll dates that reading) and counted in info().
//
// Which GPUs: by default those this process can see, from CUDA_VISIBLE_DEVICES (else the container
// runtime's NVIDIA_VISIBLE_DEVICES), matched to NVML's devices by UUID (nvml_select.hpp says how
// indices, UUID prefixes and MIG ids are read, and when an index mapping is only a guess). Domains are
// gpu<NVML index> (and module<NVML index>); each channel carries the GPU's UUID and PCI bus id. A MIG
// instance is measured as its whole GPU (and module), flagged shared.
//
// Options:
//   nvml_library=libnvidia-ml.so.1   path or soname
//   nvml_min_period_us=1000          NVML calls take a driver lock: do not poll faster than this
//   gpus=all|0,2|GPU-<uuid>,...      overrides the environment: every GPU, or NVML indices, UUIDs
//                                    (unique prefixes too) and MIG ids
#include <algorithm>
#include <atomic>
#include <optional>

#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"
#include "nvml_api.hpp"
#include "nvml_select.hpp"
#include "nvml_stamp.hpp"

namespace greenprobe {
namespace {

constexpr double kGpuMaxPowerW = 2000.0;
// A module's ceiling (informative on a power channel): GH200 modules are rated up to 1000 W; 3000 W
// leaves room for superchips with several GPUs.
constexpr double kModuleMaxPowerW = 3000.0;

// Both clocks, read as nvml_stamp.hpp needs them; read again if the thread was preempted in between
// (longer than a few vDSO reads).
nvml::ClockPair read_clocks() noexcept {
    constexpr int64_t kPairMaxNs = 5000;
    nvml::ClockPair p;
    for (int attempt = 0; attempt < 4; ++attempt) {
        p.mono_a = now_ns();
        p.wall = wall_ns();
        p.mono_b = now_ns();
        if (p.mono_b - p.mono_a <= kPairMaxNs) break;
    }
    return p;
}

class NvmlSensor final : public Sensor {
  public:
    explicit NvmlSensor(const Options& o) : api_(nvml::Api::load(o.get("nvml_library", ""))) {
        try {
            const long long min_period_us = o.get_int("nvml_min_period_us", 1000);
            if (min_period_us < 0 || min_period_us > 60000000) {
                throw SensorError(ErrorCategory::Config,
                                  "nvml_min_period_us=" + std::to_string(min_period_us) + " is outside 0..60000000",
                                  "give the shortest polling period NVML may have in microseconds (default 1000)");
            }
            min_period_ns_ = min_period_us * 1000;
            open_devices(o);
        } catch (...) {
            api_.Shutdown();
            api_.unload();
            throw;
        }
    }

    ~NvmlSensor() override {
        if (api_.handle) {
            api_.Shutdown();
            api_.unload();
        }
    }

    std::string kind() const override { return "nvml"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    int64_t min_period_ns() const override { return min_period_ns_; }

    void poll(std::vector<Reading>& out) override {
        for (auto& g : gpus_) {
            if (g.lost) {
                mark(out, g, PollStatus::Gone);
                continue;
            }
            nvml::Return r_energy = nvml::kSuccess, r_power = nvml::kSuccess, r_module = nvml::kSuccess;
            unsigned long long mj = 0;
            double mw = 0, module_mw = 0;
            int64_t t_energy = 0, t_power = 0, t_module = 0;
            if (g.use_fields) {
                nvml::FieldValue fv[3] = {};
                const int n = fill_fields(g, fv);
                const nvml::ClockPair before = read_clocks();
                const nvml::Return r = api_.DeviceGetFieldValues(g.handle, n, fv);
                const nvml::StampMap stamp(before, read_clocks());
                r_energy = r != nvml::kSuccess ? r : fv[0].nvmlReturn;
                r_power = r != nvml::kSuccess ? r : fv[1].nvmlReturn;
                if (r_energy == nvml::kSuccess) {
                    mj = static_cast<unsigned long long>(as_double(fv[0]));
                    if (g.energy_channel >= 0) t_energy = date(stamp, fv[0]);
                }
                if (r_power == nvml::kSuccess) {
                    mw = as_double(fv[1]);
                    t_power = date(stamp, fv[1]);
                }
                if (g.module_channel >= 0) {
                    r_module = r != nvml::kSuccess ? r : fv[2].nvmlReturn;
                    if (r_module == nvml::kSuccess) {
                        module_mw = as_double(fv[2]);
                        t_module = date(stamp, fv[2]);
                    }
                }
            } else {
                if (g.energy_channel >= 0) r_energy = api_.DeviceGetTotalEnergyConsumption(g.handle, &mj);
                if (g.power_channel >= 0) {
                    unsigned int p = 0;
                    r_power = api_.DeviceGetPowerUsage(g.handle, &p);
                    mw = p;
                }
            }
            if (g.energy_channel >= 0) store(out[g.energy_channel], g, r_energy, static_cast<double>(mj) * 1e-3, t_energy);
            if (g.power_channel >= 0) store(out[g.power_channel], g, r_power, mw * 1e-3, t_power);
            if (g.module_channel >= 0) store(out[g.module_channel], g, r_module, module_mw * 1e-3, t_module);
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {{"nvml_library", api_.path}, {"driver_version", driver_}};
        std::string visible;
        for (const auto& g : gpus_) {
            const std::string gpu = "gpu" + std::to_string(g.index);
            m[gpu + "_name"] = g.name;
            m[gpu + "_power_source"] = g.power_source;
            m[gpu + "_uuid"] = g.uuid;
            m[gpu + "_pci_bus_id"] = g.bus_id;
            m[gpu + "_module_power"] = g.module_note;
            if (!g.mig.empty()) m[gpu + "_shared_with_mig"] = "measured whole for " + join(g.mig);
            visible += (visible.empty() ? "" : " ") + gpu;
        }
        m["visible_devices"] = visible + (selection_.source == "default" ? " (every GPU NVML sees)"
                                                                          : " from " + selection_.source + "='" + selection_.given + "'");
        m["visible_devices_source"] = selection_.source;
        const bool fields = std::any_of(gpus_.begin(), gpus_.end(), [](const Gpu& g) { return g.use_fields; });
        m["reading_time"] = fields ? "NVML's field timestamp, mapped to CLOCK_MONOTONIC around each call; the poll's "
                                     "time where it is rejected (outside its call, or the wall clock stepped)"
                                   : "the poll's time (no field values: the dedicated calls carry no timestamp)";
        m["timestamps_used"] = std::to_string(stamps_used_.load(std::memory_order_relaxed));
        m["timestamps_rejected"] = std::to_string(stamps_rejected_.load(std::memory_order_relaxed));
        if (!selection_.note.empty()) m["visible_devices_note"] = selection_.note;
        if (!selection_.mapping.empty()) {
            if (selection_.source == "CUDA_VISIBLE_DEVICES") m["cuda_visible_devices_mapping"] = selection_.mapping;
            else if (selection_.source == "NVIDIA_VISIBLE_DEVICES") m["nvidia_visible_devices_mapping"] = selection_.mapping;
            else m["gpus_mapping"] = selection_.mapping;
        }
        return m;
    }
    std::string last_error() const override { return last_error_; }

  private:
    // nvmlDeviceArchitecture_t
    static constexpr unsigned kArchVolta = 5, kArchTuring = 6, kArchAmpere = 7, kArchAda = 8, kArchHopper = 9,
                              kArchPascal = 4, kArchUnknown = 0xffffffffu;

    struct PowerWindow {
        int64_t nominal_ns, min_ns, max_ns;
        std::string why;
    };

    // The window one power reading averages, by architecture (Yang et al. SC'24 artifact,
    // MEASUREMENT.md 1.3; ranges over the boards measured, widened a little).
    // nvmlDeviceGetPowerUsage is a 1-s average on Ampere and newer except GA100 (NVML's docs);
    // elsewhere it is the instant value, as field 186 is everywhere. GA100 is told apart by its PCI
    // device ids (0x20xx; consumer and workstation Ampere are 0x22xx-0x25xx).
    static PowerWindow power_window(unsigned arch, unsigned pci_device, bool field_instant) {
        constexpr int64_t ms = 1000000;
        const bool ga100 = arch == kArchAmpere && (pci_device >> 8) == 0x20;
        const bool known_newer = arch != kArchUnknown && arch >= kArchAmpere;
        if (!field_instant && known_newer && !ga100) return {1000 * ms, 850 * ms, 1050 * ms, "1 s (Ampere and newer)"};
        if (!field_instant && arch == kArchUnknown) {
            return {1000 * ms, 5 * ms, 1050 * ms, "unknown (architecture unknown: 5 ms to 1 s)"};
        }
        switch (arch) {
            case kArchHopper: return {25 * ms, 18 * ms, 27 * ms, "~25 ms (Hopper)"};
            case kArchAmpere:
                return ga100 ? PowerWindow{25 * ms, 16 * ms, 27 * ms, "~25 ms (GA100)"}
                             : PowerWindow{100 * ms, 75 * ms, 115 * ms, "~100 ms (Ampere GA10x)"};
            case kArchAda: return {100 * ms, 75 * ms, 115 * ms, "~100 ms (Ada)"};
            case kArchTuring: return {100 * ms, 18 * ms, 110 * ms, "20-100 ms (Turing: by board)"};
            case kArchVolta: return {10 * ms, 9 * ms, 12 * ms, "~10 ms of 20 (Volta)"};
            case kArchPascal: return {10 * ms, 7 * ms, 13 * ms, "~10 ms of 20 (Pascal)"};
            default: return {25 * ms, 5 * ms, 1050 * ms, "unknown for this architecture: 5 ms to 1 s"};
        }
    }

    // The window of the module's power (field 186 at module scope). Grace Hopper: Yang et al. report
    // the GPU sampled ~20 % and the Grace CPU ~10 % of the time (MEASUREMENT.md 1.4, from a public
    // summary of their paper, consistent with its abstract): windows of ~20 ms and ~10 ms of every
    // 100 ms, so the sum averages 10-20 ms depending on the part; stated as 8-27 ms (widened as
    // above, up to Hopper's GPU window). Other architectures: unknown.
    static PowerWindow module_window(unsigned arch) {
        constexpr int64_t ms = 1000000;
        if (arch == kArchHopper) {
            return {20 * ms, 8 * ms, 27 * ms, "~10-20 ms (Grace Hopper: CPU ~10 ms, GPU ~20 ms of each 100 ms)"};
        }
        return {25 * ms, 5 * ms, 1050 * ms, "unknown for this architecture: 5 ms to 1 s"};
    }

    struct Gpu {
        unsigned index = 0;
        nvml::Device handle = nullptr;
        std::string name, power_source, uuid, bus_id;
        std::string module_note;       // module<N>: what it reads and averages, or why it is absent
        std::vector<std::string> mig;  // chosen through these MIG instances: measured whole, shared
        bool use_fields = false;
        bool lost = false;
        int energy_channel = -1, power_channel = -1, module_channel = -1;
    };

    // The field values one poll of g asks for: energy, GPU power, and the module's power where it
    // has one. Returns how many.
    static int fill_fields(const Gpu& g, nvml::FieldValue* fv) {
        fv[0].fieldId = nvml::kFieldTotalEnergyConsumption;
        fv[1].fieldId = nvml::kFieldPowerInstant;
        fv[1].scopeId = nvml::kPowerScopeGpu;
        if (g.module_channel < 0) return 2;
        fv[2].fieldId = nvml::kFieldPowerInstant;
        fv[2].scopeId = nvml::kPowerScopeModule;
        return 3;
    }

    // A field's reading time (StampMap::map; 0: the poll's), counted as used or rejected.
    int64_t date(const nvml::StampMap& stamp, const nvml::FieldValue& f) {
        const int64_t t = stamp.map(f.timestamp);
        (t != 0 ? stamps_used_ : stamps_rejected_).fetch_add(1, std::memory_order_relaxed);
        return t;
    }

    static std::string join(const std::vector<std::string>& v) {
        std::string s;
        for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
        return s;
    }

    static double as_double(const nvml::FieldValue& f) {
        switch (f.valueType) {
            case nvml::kValueTypeDouble: return f.value.dVal;
            case nvml::kValueTypeUInt: return f.value.uiVal;
            case nvml::kValueTypeULong: return static_cast<double>(f.value.ulVal);
            case nvml::kValueTypeULongLong: return static_cast<double>(f.value.ullVal);
            case nvml::kValueTypeSLongLong: return static_cast<double>(f.value.sllVal);
            case nvml::kValueTypeSInt: return f.value.siVal;
            default: return static_cast<double>(f.value.ullVal);
        }
    }

    void mark(std::vector<Reading>& out, const Gpu& g, PollStatus s) {
        if (g.energy_channel >= 0) out[g.energy_channel].status = s;
        if (g.power_channel >= 0) out[g.power_channel].status = s;
        if (g.module_channel >= 0) out[g.module_channel].status = s;
    }

    void store(Reading& r, Gpu& g, nvml::Return code, double value, int64_t t_ns) {
        r.t_ns = t_ns;
        if (code == nvml::kSuccess) {
            r.energy_j_or_power_w = value;
            r.status = PollStatus::Ok;
            return;
        }
        const nvml::ReturnClass rc = nvml::classify(code);
        last_error_ = "gpu" + std::to_string(g.index) + ": " + api_.error_string(code);
        if (rc.lost) {
            g.lost = true;
            r.status = PollStatus::Gone;
        } else {
            r.status = rc.transient ? PollStatus::Retry : PollStatus::Gone;
        }
    }

    void open_devices(const Options& o) {
        unsigned int count = 0;
        nvml::Return r = api_.DeviceGetCount(&count);
        if (r != nvml::kSuccess) {
            throw SensorError(nvml::classify(r).category, "nvmlDeviceGetCount failed: " + api_.error_string(r),
                              "check that nvidia-smi lists the GPUs");
        }
        if (count == 0) {
            throw SensorError(ErrorCategory::NotFound, "NVML reports no GPU", "check that nvidia-smi lists the GPUs");
        }
        if (api_.SystemGetDriverVersion) {
            char buf[96] = {};
            if (api_.SystemGetDriverVersion(buf, sizeof buf) == nvml::kSuccess) driver_ = buf;
        }
        // Every GPU NVML sees, with its identity, then the ones this process can see.
        std::vector<nvml::KnownGpu> known(count);
        std::vector<nvml::Return> handle_rc(count, nvml::kSuccess);
        for (unsigned i = 0; i < count; ++i) {
            known[i].index = i;
            handle_rc[i] = api_.DeviceGetHandleByIndex(i, &known[i].handle);
            if (handle_rc[i] != nvml::kSuccess) {
                known[i].handle = nullptr;
                continue;
            }
            if (api_.DeviceGetUUID) {
                char buf[nvml::kUuidBufferSize] = {};
                if (api_.DeviceGetUUID(known[i].handle, buf, sizeof buf) == nvml::kSuccess) known[i].uuid = buf;
            }
        }
        selection_ = nvml::select_gpus(api_, known, o.has("gpus") ? std::optional<std::string>(o.get("gpus", ""))
                                                                  : std::nullopt,
                                       nvml::VisibleEnv::from_process());
        std::string reasons;
        for (const auto& chosen : selection_.gpus) {
            const unsigned i = chosen.index;
            Gpu g;
            g.index = i;
            g.handle = known[i].handle;
            g.uuid = known[i].uuid;
            g.mig = chosen.mig;
            if (handle_rc[i] != nvml::kSuccess) {
                reasons += " gpu" + std::to_string(i) + ": " + api_.error_string(handle_rc[i]) + ";";
                continue;
            }
            if (api_.DeviceGetPciInfo) {
                nvml::PciInfo pci{};
                if (api_.DeviceGetPciInfo(g.handle, &pci) == nvml::kSuccess) {
                    pci.busId[sizeof pci.busId - 1] = '\0';
                    pci.busIdLegacy[sizeof pci.busIdLegacy - 1] = '\0';
                    g.bus_id = pci.busId[0] ? pci.busId : pci.busIdLegacy;
                }
            }
            if (api_.DeviceGetName) {
                char buf[96] = {};
                if (api_.DeviceGetName(g.handle, buf, sizeof buf) == nvml::kSuccess) g.name = buf;
            }
            unsigned arch = kArchUnknown, pci_device = 0;
            if (!api_.DeviceGetArchitecture || api_.DeviceGetArchitecture(g.handle, &arch) != nvml::kSuccess) {
                arch = kArchUnknown;
            }
            if (api_.DeviceGetPciInfo) {
                nvml::PciInfo pci{};
                if (api_.DeviceGetPciInfo(g.handle, &pci) == nvml::kSuccess) pci_device = pci.pciDeviceId >> 16;
            }
            // Probe capabilities once: field values first, then the dedicated calls.
            bool energy_ok = false, power_ok = false, power_instant = false;
            if (api_.DeviceGetFieldValues) {
                nvml::FieldValue fv[2] = {};
                fv[0].fieldId = nvml::kFieldTotalEnergyConsumption;
                fv[1].fieldId = nvml::kFieldPowerInstant;
                // instant power is what makes the fields worth it (a 25 ms average, not 1 s); a board
                // without an energy counter (before Volta) still gets it
                if (api_.DeviceGetFieldValues(g.handle, 2, fv) == nvml::kSuccess && fv[1].nvmlReturn == nvml::kSuccess) {
                    g.use_fields = true;
                    power_ok = power_instant = true;
                    energy_ok = fv[0].nvmlReturn == nvml::kSuccess;
                }
            }
            if (!g.use_fields) {
                unsigned long long mj = 0;
                unsigned int mw = 0;
                energy_ok = api_.DeviceGetTotalEnergyConsumption &&
                            api_.DeviceGetTotalEnergyConsumption(g.handle, &mj) == nvml::kSuccess;
                power_ok = api_.DeviceGetPowerUsage && api_.DeviceGetPowerUsage(g.handle, &mw) == nvml::kSuccess;
            }
            // The module's power: asked in the very call each poll makes, so that a driver that
            // refuses the combination is seen here.
            bool module_ok = false;
            if (g.use_fields) {
                nvml::FieldValue fv[3] = {};
                Gpu with_module = g;
                with_module.module_channel = 0;
                const int n = fill_fields(with_module, fv);
                const nvml::Return rc = api_.DeviceGetFieldValues(g.handle, n, fv);
                const nvml::Return rm = rc != nvml::kSuccess ? rc : fv[2].nvmlReturn;
                module_ok = rm == nvml::kSuccess && fv[1].nvmlReturn == nvml::kSuccess;
                if (!module_ok) {
                    g.module_note = "none: field 186 at module scope (NVML_POWER_SCOPE_MODULE) is not available (" +
                                    api_.error_string(rm != nvml::kSuccess ? rm : fv[1].nvmlReturn) +
                                    "); only Grace Hopper modules report it";
                }
            } else {
                g.module_note = "none: module power needs nvmlDeviceGetFieldValues, which this GPU or driver lacks";
            }
            const std::string module_domain = "module" + std::to_string(i);
            ChannelInfo base;
            base.domain = "gpu" + std::to_string(i);
            base.parent_domain = module_ok ? module_domain : "";  // the module's energy contains the GPU's
            // The power ceiling of one GPU: the largest boards are rated 1000-1400 W (B200, B300);
            // 2000 W leaves room for what comes next. The energy counter is 64-bit mJ: it never wraps.
            base.max_power_w = kGpuMaxPowerW;
            base.device_uuid = g.uuid;
            base.device_bus_id = g.bus_id;
            base.shared = !g.mig.empty();
            if (energy_ok) {
                ChannelInfo c = base;
                c.quantity = Quantity::EnergyCounter;
                c.resolution_j = 1e-3;
                c.nominal_update_period_ns = 100000000;  // 20-100 ms depending on the GPU; learned from edges
                g.energy_channel = static_cast<int>(channels_.size());
                channels_.push_back(c);
            }
            if (power_ok) {
                ChannelInfo c = base;
                c.quantity = Quantity::Power;
                c.resolution_w = 1e-3;
                c.nominal_update_period_ns = 100000000;
                const PowerWindow pw = power_window(arch, pci_device, power_instant);
                c.averaging_window_ns = pw.nominal_ns;
                c.averaging_window_min_ns = pw.min_ns;
                c.averaging_window_max_ns = pw.max_ns;
                g.power_source = std::string(power_instant ? "field 186 (instant)" : "nvmlDeviceGetPowerUsage") +
                                 ", averaging " + pw.why;
                g.power_channel = static_cast<int>(channels_.size());
                channels_.push_back(c);
            }
            if (!energy_ok && !power_ok) {
                reasons += " gpu" + std::to_string(i) + ": neither energy nor power is supported;";
                continue;
            }
            if (module_ok) {
                ChannelInfo c = base;
                c.domain = module_domain;
                c.parent_domain.clear();
                c.quantity = Quantity::Power;
                c.resolution_w = 1e-3;
                c.nominal_update_period_ns = 100000000;
                c.max_power_w = kModuleMaxPowerW;
                const PowerWindow pw = module_window(arch);
                c.averaging_window_ns = pw.nominal_ns;
                c.averaging_window_min_ns = pw.min_ns;
                c.averaging_window_max_ns = pw.max_ns;
                g.module_note = module_domain + ": field 186 at module scope (GPU + CPU + memory), averaging " + pw.why;
                g.module_channel = static_cast<int>(channels_.size());
                channels_.push_back(c);
            }
            gpus_.push_back(g);
        }
        if (channels_.empty()) {
            throw SensorError(ErrorCategory::Unsupported, "no GPU offers energy or power through NVML:" + reasons,
                              "energy counters need a Volta or newer GPU; power needs a board with a power sensor");
        }
    }

    nvml::Api api_;
    std::vector<Gpu> gpus_;
    std::vector<ChannelInfo> channels_;
    nvml::Selection selection_;
    std::string driver_;
    std::string last_error_;
    int64_t min_period_ns_ = 1000000;
    // Field timestamps that dated a reading, and those rejected (written by the polling thread, read
    // by info() from any thread).
    std::atomic<uint64_t> stamps_used_{0}, stamps_rejected_{0};
};

}  // namespace

std::unique_ptr<Sensor> open_nvml(const Options& options) { return std::make_unique<NvmlSensor>(options); }

}  // namespace greenprobe
