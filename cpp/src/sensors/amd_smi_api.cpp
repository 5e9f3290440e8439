#include "amd_smi_api.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <utility>

namespace greenprobe::amdsmi {

std::string Bdf::text() const {
    char buf[48];
    std::snprintf(buf, sizeof buf, "%04llx:%02x:%02x.%x", static_cast<unsigned long long>(domain()), bus(), device(),
                  function());
    return buf;
}

Version decode_version(const RawVersion& raw) {
    Version v;
    const uint32_t first = raw.word[0];
    if (first >= 25 && first < 1000) {  // major.minor.release (25.0 on)
        v.major = first;
        v.minor = raw.word[1];
        v.release = raw.word[2];
        v.text = std::to_string(v.major) + "." + std::to_string(v.minor) + "." + std::to_string(v.release);
        v.known = true;
    } else if (first >= 20 && first <= 24) {  // year.major.minor.release
        v.year = first;
        v.major = raw.word[1];
        v.minor = raw.word[2];
        v.release = raw.word[3];
        v.text = std::to_string(v.year) + "." + std::to_string(v.major) + "." + std::to_string(v.minor) + "." +
                 std::to_string(v.release);
        v.known = true;
    }
    return v;
}

PowerLayout power_layout(const Version& v) {
    if (!v.known) return PowerLayout::Unknown;
    if (v.year == 0) return PowerLayout::SocketPower64;
    if (v.year < 23 || (v.year == 23 && v.major < 4)) return PowerLayout::OldAverage;
    return PowerLayout::CurrentAverage;
}

const char* layout_name(PowerLayout l) {
    switch (l) {
        case PowerLayout::OldAverage: return "average_socket_power first (before 23.4)";
        case PowerLayout::CurrentAverage: return "current_socket_power, average_socket_power (23.4 to 24.x)";
        case PowerLayout::SocketPower64: return "u64 socket_power first (25.0 on)";
        case PowerLayout::Unknown: break;
    }
    return "unknown";
}

namespace {

template <typename T>
T at(const unsigned char* buffer, std::size_t offset) {
    T v;
    std::memcpy(&v, buffer + offset, sizeof v);
    return v;
}

bool is_sentinel(uint64_t v) {
    return v == 0xFFFFu || v == 0xFFFFFFFFu || v == std::numeric_limits<uint64_t>::max();
}

}  // namespace

PowerReading decode_power(const unsigned char* buffer, PowerLayout layout) {
    struct Candidate {
        uint64_t value;
        const char* member;
    };
    Candidate c[3] = {};
    int n = 0;
    switch (layout) {
        case PowerLayout::OldAverage:
            c[n++] = {at<uint32_t>(buffer, 0), "average_socket_power"};
            break;
        case PowerLayout::CurrentAverage:
            c[n++] = {at<uint32_t>(buffer, 0), "current_socket_power"};
            c[n++] = {at<uint32_t>(buffer, 4), "average_socket_power"};
            break;
        case PowerLayout::SocketPower64:
            c[n++] = {at<uint64_t>(buffer, 0), "socket_power"};
            c[n++] = {at<uint32_t>(buffer, 8), "current_socket_power"};
            c[n++] = {at<uint32_t>(buffer, 12), "average_socket_power"};
            break;
        case PowerLayout::Unknown:
            return {};
    }
    // The first member the board fills in; a 0 only where no member says more (some boards leave
    // the members they do not support at 0).
    const Candidate* zero = nullptr;
    for (int i = 0; i < n; ++i) {
        if (is_sentinel(c[i].value)) continue;
        if (c[i].value == 0) {
            if (!zero) zero = &c[i];
            continue;
        }
        return {true, static_cast<double>(c[i].value), c[i].member};
    }
    if (zero) return {true, 0.0, zero->member};
    return {};
}

ProcLayout proc_layout(const Version& v) {
    if (!v.known) return ProcLayout::Unknown;
    // AMDSMI_NORMAL_STRING_LENGTH (32) gave way to AMDSMI_MAX_STRING_LENGTH (256) with the year-less
    // versions (25.0, ROCm 6.4)
    return v.year == 0 ? ProcLayout::Name256 : ProcLayout::Name32;
}

const char* proc_layout_name(ProcLayout l) {
    switch (l) {
        case ProcLayout::Name32: return "name[32], 224 bytes (up to 24.x)";
        case ProcLayout::Name256: return "name[256], 704 bytes (25.0 on)";
        case ProcLayout::Unknown: break;
    }
    return "unknown";
}

std::size_t proc_info_size(ProcLayout l) {
    switch (l) {
        case ProcLayout::Name32: return 224;
        case ProcLayout::Name256: return 704;
        case ProcLayout::Unknown: break;
    }
    return 0;
}

ProcessInfo decode_process(const unsigned char* entry, ProcLayout layout) {
    ProcessInfo p;
    if (layout == ProcLayout::Unknown) return p;
    const std::size_t name_len = layout == ProcLayout::Name32 ? 32 : 256;
    // name[name_len]; pid; (4 bytes of padding); mem; engine_usage {gfx, enc, u32[12]}; memory_usage
    // {gtt_mem, cpu_mem, vram_mem, u32[10]}; container_name[name_len]; ...
    const std::size_t pid_at = name_len, mem_at = name_len + 8, gfx_at = mem_at + 8, enc_at = gfx_at + 8;
    const std::size_t vram_at = gfx_at + 64 + 16;
    p.name.assign(reinterpret_cast<const char*>(entry), strnlen(reinterpret_cast<const char*>(entry), name_len));
    p.pid = at<uint32_t>(entry, pid_at);
    p.mem_bytes = at<uint64_t>(entry, mem_at);
    p.gfx_ns = at<uint64_t>(entry, gfx_at);
    p.enc_ns = at<uint64_t>(entry, enc_at);
    p.vram_bytes = at<uint64_t>(entry, vram_at);
    return p;
}

StatusClass classify(Status s) {
    switch (s) {
        case kNoPerm: return {ErrorCategory::Permission, false, false};
        case kNotSupported:
        case kNotYetImplemented: return {ErrorCategory::Unsupported, false, false};
        case kFailLoadModule:
        case kFailLoadSymbol:
        case kDriverNotLoaded: return {ErrorCategory::LibraryMissing, false, false};
        // A device that disappears takes its sysfs and DRM files with it: AMD SMI reports the
        // files or the device as not found, or a failed driver restart.
        case kNotFound:
        case kFileError:
        case kFileNotFound:
        case kDirectoryNotFound:
        case kNotInit:
        case kAmdgpuRestartErr: return {ErrorCategory::DeviceLost, false, true};
        case kTimeout:
        case kRetry:
        case kInterrupt:
        case kBusy: return {ErrorCategory::Io, true, false};
        default: return {ErrorCategory::Io, false, false};
    }
}

namespace {

const char* kNoLibraryFix =
    "install ROCm's AMD SMI library (amd-smi-lib: it ships libamd_smi.so under /opt/rocm/lib), or point "
    "GREENPROBE_AMD_SMI_LIBRARY (option amd_smi_library) at the library's full path";

template <typename F>
void bind(void* h, const char* name, F& fn) {
    fn = reinterpret_cast<F>(dlsym(h, name));
}

// The names of the codes greenprobe handles, for libraries without amdsmi_status_code_to_string.
const char* status_name(Status s) {
    switch (s) {
        case kSuccess: return "AMDSMI_STATUS_SUCCESS";
        case kInval: return "AMDSMI_STATUS_INVAL";
        case kNotSupported: return "AMDSMI_STATUS_NOT_SUPPORTED";
        case kNoPerm: return "AMDSMI_STATUS_NO_PERM";
        case kIo: return "AMDSMI_STATUS_IO";
        case kFileError: return "AMDSMI_STATUS_FILE_ERROR";
        case kOutOfResources: return "AMDSMI_STATUS_OUT_OF_RESOURCES";
        case kBusy: return "AMDSMI_STATUS_BUSY";
        case kNotFound: return "AMDSMI_STATUS_NOT_FOUND";
        case kNotInit: return "AMDSMI_STATUS_NOT_INIT";
        case kDriverNotLoaded: return "AMDSMI_STATUS_DRIVER_NOT_LOADED";
        case kInitError: return "AMDSMI_STATUS_INIT_ERROR";
        default: return nullptr;
    }
}

}  // namespace

namespace {
std::mutex& init_mutex() {
    static std::mutex m;
    return m;
}
struct Users {
    int users = 0;              // Api objects that initialised this library and have not shut down
    int pending_shutdowns = 0;  // the shutdowns of those that went, held back
};
// dlopen handle -> its users
std::map<void*, Users>& init_users() {
    static std::map<void*, Users> users;
    return users;
}
}  // namespace

Api Api::load(const std::string& library) {
    Api api;
    // The unversioned name is what ROCm installs; /opt/rocm/lib (or $ROCM_PATH/lib) is not always on
    // the loader's path, so it is tried too when no library was named.
    std::vector<std::string> tries;
    if (!library.empty()) {
        tries.push_back(library);
    } else {
        tries.push_back("libamd_smi.so");
        const char* rocm = std::getenv("ROCM_PATH");
        if (rocm && *rocm) tries.push_back(std::string(rocm) + "/lib/libamd_smi.so");
        tries.push_back("/opt/rocm/lib/libamd_smi.so");
    }
    std::string why_not;
    for (const auto& t : tries) {
        api.handle = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (api.handle) {
            api.path = t;
            break;
        }
        const char* why = dlerror();
        why_not += (why_not.empty() ? "" : "; ") + std::string(why ? why : t + ": unknown error");
    }
    if (!api.handle) {
        throw SensorError(ErrorCategory::LibraryMissing, "cannot load the AMD SMI library (tried " + std::to_string(tries.size()) +
                                                             " place" + (tries.size() == 1 ? "" : "s") + "): " + why_not,
                          kNoLibraryFix);
    }
    bind(api.handle, "amdsmi_init", api.Init);
    bind(api.handle, "amdsmi_shut_down", api.ShutDown);
    bind(api.handle, "amdsmi_get_socket_handles", api.GetSocketHandles);
    bind(api.handle, "amdsmi_get_processor_handles", api.GetProcessorHandles);
    const std::pair<const char*, bool> required[] = {
        {"amdsmi_init", api.Init != nullptr},
        {"amdsmi_shut_down", api.ShutDown != nullptr},
        {"amdsmi_get_socket_handles", api.GetSocketHandles != nullptr},
        {"amdsmi_get_processor_handles", api.GetProcessorHandles != nullptr},
    };
    for (const auto& [name, ok] : required) {
        if (!ok) {
            const std::string path = api.path;
            dlclose(api.handle);
            throw SensorError(ErrorCategory::LibraryMissing,
                              "AMD SMI library '" + path + "' lacks the required symbol " + name +
                                  " (is it libamd_smi.so, and from ROCm 5.7 or newer?)",
                              "update ROCm (5.7 or newer), or point GREENPROBE_AMD_SMI_LIBRARY at a complete libamd_smi.so");
        }
    }
    bind(api.handle, "amdsmi_get_processor_type", api.GetProcessorType);
    bind(api.handle, "amdsmi_status_code_to_string", api.StatusCodeToString);
    bind(api.handle, "amdsmi_get_lib_version", api.GetLibVersion);
    bind(api.handle, "amdsmi_get_energy_count", api.GetEnergyCount);
    bind(api.handle, "amdsmi_get_power_info", api.GetPowerInfo);
    bind(api.handle, "amdsmi_get_gpu_activity", api.GetGpuActivity);
    bind(api.handle, "amdsmi_get_gpu_memory_usage", api.GetGpuMemoryUsage);
    bind(api.handle, "amdsmi_get_gpu_memory_total", api.GetGpuMemoryTotal);
    bind(api.handle, "amdsmi_get_gpu_device_uuid", api.GetGpuDeviceUuid);
    bind(api.handle, "amdsmi_get_gpu_device_bdf", api.GetGpuDeviceBdf);
    bind(api.handle, "amdsmi_get_gpu_process_list", api.GetGpuProcessList);

    if (api.GetLibVersion) {
        RawVersion raw{};
        if (api.GetLibVersion(&raw) == kSuccess) api.version = decode_version(raw);
    }
    // Counted per process and library: AMD SMI before its own reference count (most of ROCm 6.x)
    // tears everything down at the first amdsmi_shut_down, which would leave a second user (a
    // Probe's sensor beside the study's usage reader) with dead handles. Every user initialises (a
    // later AMD SMI counts, and a no-op otherwise); the shutdowns wait for the last user.
    std::lock_guard<std::mutex> hold(init_mutex());
    const Status s = api.Init(kInitAmdGpus);
    if (s != kSuccess) {
        const std::string msg = "amdsmi_init(AMDSMI_INIT_AMD_GPUS) failed in '" + api.path + "': " + api.error_string(s);
        const StatusClass sc = classify(s);
        dlclose(api.handle);
        throw SensorError(
            sc.category == ErrorCategory::DeviceLost ? ErrorCategory::NotFound : sc.category, msg,
            s == kDriverNotLoaded ? "load the amdgpu kernel driver (modprobe amdgpu); `amd-smi list` should then show the GPUs"
            : s == kNoPerm        ? "give this user access to /dev/kfd and /dev/dri/renderD* (the render and video groups); "
                                    "in a container pass --device /dev/kfd --device /dev/dri"
                                  : "check that `amd-smi list` shows the GPUs; " + std::string(kNoLibraryFix));
    }
    ++init_users()[api.handle].users;
    return api;
}

std::string Api::error_string(Status s) const {
    std::string out = "AMD SMI status " + std::to_string(s);
    const char* text = nullptr;
    if (StatusCodeToString && StatusCodeToString(s, &text) == kSuccess && text && *text) {
        out += " (" + std::string(text) + ")";
    } else if (const char* name = status_name(s)) {
        out += " (" + std::string(name) + ")";
    }
    return out;
}

Status Api::read_power(ProcessorHandle h, PowerReading& out) const {
    out = {};
    const PowerLayout layout = power_layout(version);
    if (!GetPowerInfo || layout == PowerLayout::Unknown) return kNotSupported;
    alignas(8) unsigned char buffer[kPowerInfoBuffer] = {};
    const Status s = GetPowerInfo(h, buffer);
    if (s != kSuccess) return s;
    out = decode_power(buffer, layout);
    return out.ok ? kSuccess : kNotSupported;
}

std::string Api::process_list_support() const {
    if (!GetGpuProcessList) return "this AMD SMI ('" + path + "') has no amdsmi_get_gpu_process_list";
    if (proc_layout(version) == ProcLayout::Unknown) {
        return "the version of this AMD SMI ('" + path + "') cannot be read" +
               (version.text.empty() ? "" : " (" + version.text + ")") +
               ", so the layout of its amdsmi_proc_info_t is not known";
    }
    return "";
}

Status Api::read_processes(ProcessorHandle h, std::vector<ProcessInfo>& out) const {
    out.clear();
    const ProcLayout layout = proc_layout(version);
    if (!process_list_support().empty()) return kNotSupported;
    const std::size_t size = proc_info_size(layout);
    uint32_t n = 0;
    Status s = GetGpuProcessList(h, &n, nullptr);  // max_processes 0: the count
    if (s != kSuccess) return s;
    std::vector<uint64_t> buffer;  // 8-byte aligned, as the structure is
    for (int tries = 0; tries < 4; ++tries) {
        if (n == 0) return kSuccess;
        const uint32_t room = n + 8;  // and those that start meanwhile
        buffer.assign(room * kProcInfoStride / sizeof(uint64_t), 0);
        uint32_t got = room;
        s = GetGpuProcessList(h, &got, buffer.data());
        if (s == kOutOfResources) {  // more than room: got is how many there are now
            n = got;
            continue;
        }
        if (s != kSuccess) return s;
        const auto* bytes = reinterpret_cast<const unsigned char*>(buffer.data());
        for (uint32_t i = 0; i < std::min(got, room); ++i) out.push_back(decode_process(bytes + i * size, layout));
        return kSuccess;
    }
    return kOutOfResources;
}

void Api::shut_down_and_unload() {
    if (!handle) return;
    {
        std::lock_guard<std::mutex> hold(init_mutex());
        auto it = init_users().find(handle);
        if (it != init_users().end()) {
            it->second.pending_shutdowns++;
            if (--it->second.users == 0) {
                // the last user of this library in the process: one shutdown per init
                for (int i = 0; i < it->second.pending_shutdowns; ++i) ShutDown();
                init_users().erase(it);
            }
        }
    }
    dlclose(handle);  // the loader counts its own references
    handle = nullptr;
}

std::vector<KnownGpu> enumerate_gpus(const Api& api) {
    const std::string fix = "check that `amd-smi list` shows the GPUs and that the amdgpu driver is loaded";
    uint32_t sockets = 0;
    Status s = api.GetSocketHandles(&sockets, nullptr);
    if (s != kSuccess) {
        throw SensorError(classify(s).category, "amdsmi_get_socket_handles failed in '" + api.path + "': " + api.error_string(s), fix);
    }
    std::vector<SocketHandle> socket_handles(sockets);
    if (sockets > 0) {
        s = api.GetSocketHandles(&sockets, socket_handles.data());
        if (s != kSuccess) {
            throw SensorError(classify(s).category,
                              "amdsmi_get_socket_handles failed in '" + api.path + "': " + api.error_string(s), fix);
        }
        socket_handles.resize(std::min<std::size_t>(sockets, socket_handles.size()));
    }
    std::vector<KnownGpu> gpus;
    for (SocketHandle socket : socket_handles) {
        uint32_t count = 0;
        s = api.GetProcessorHandles(socket, &count, nullptr);
        if (s != kSuccess) {
            throw SensorError(classify(s).category,
                              "amdsmi_get_processor_handles failed in '" + api.path + "': " + api.error_string(s), fix);
        }
        std::vector<ProcessorHandle> processors(count);
        if (count > 0) {
            s = api.GetProcessorHandles(socket, &count, processors.data());
            if (s != kSuccess) {
                throw SensorError(classify(s).category,
                                  "amdsmi_get_processor_handles failed in '" + api.path + "': " + api.error_string(s), fix);
            }
            processors.resize(std::min<std::size_t>(count, processors.size()));
        }
        for (ProcessorHandle p : processors) {
            uint32_t type = kProcessorTypeAmdGpu;
            if (api.GetProcessorType && api.GetProcessorType(p, &type) == kSuccess && type != kProcessorTypeAmdGpu) continue;
            KnownGpu g;
            g.index = static_cast<unsigned>(gpus.size());
            g.handle = p;
            if (api.GetGpuDeviceUuid) {
                char buf[96] = {};
                unsigned int length = sizeof buf - 1;
                if (api.GetGpuDeviceUuid(p, &length, buf) == kSuccess) g.uuid = buf;
            }
            if (api.GetGpuDeviceBdf) {
                Bdf bdf{};
                if (api.GetGpuDeviceBdf(p, &bdf) == kSuccess) g.bus_id = bdf.text();
            }
            gpus.push_back(std::move(g));
        }
    }
    if (gpus.empty()) {
        throw SensorError(ErrorCategory::NotFound, "AMD SMI ('" + api.path + "') reports no AMD GPU", fix);
    }
    return gpus;
}

}  // namespace greenprobe::amdsmi
