#include "nvml_api.hpp"

#include <dlfcn.h>

namespace greenprobe::nvml {

ReturnClass classify(Return r) {
    switch (r) {
        case kErrorNoPermission: return {ErrorCategory::Permission, false, false};
        case kErrorNotSupported: return {ErrorCategory::Unsupported, false, false};
        case kErrorNotFound: return {ErrorCategory::NotFound, false, false};
        case kErrorDriverNotLoaded:
        case kErrorLibraryNotFound:
        case kErrorFunctionNotFound: return {ErrorCategory::LibraryMissing, false, false};
        case kErrorGpuIsLost:
        case kErrorResetRequired: return {ErrorCategory::DeviceLost, false, true};
        case kErrorTimeout:
        case kErrorUnknown: return {ErrorCategory::Io, true, false};
        case kErrorUninitialized:
        case kErrorInvalidArgument:
        default: return {ErrorCategory::Io, false, false};
    }
}

namespace {
const char* kNoLibraryFix =
    "install the NVIDIA driver (it ships libnvidia-ml.so.1); in a container run with the NVIDIA container "
    "toolkit (--gpus all); or point GREENPROBE_NVML_LIBRARY at the library's full path";

template <typename F>
void bind(void* h, const char* name, F& fn) {
    fn = reinterpret_cast<F>(dlsym(h, name));
}
}  // namespace

Api Api::load(const std::string& library) {
    Api api;
    api.path = library.empty() ? "libnvidia-ml.so.1" : library;
    api.handle = dlopen(api.path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!api.handle) {
        const char* why = dlerror();
        throw SensorError(ErrorCategory::LibraryMissing,
                          "cannot load NVML library '" + api.path + "': " + (why ? why : "unknown error"), kNoLibraryFix);
    }
    // Required symbols, with the pre-v2 names as fallbacks.
    bind(api.handle, "nvmlInit_v2", api.Init);
    if (!api.Init) bind(api.handle, "nvmlInit", api.Init);
    bind(api.handle, "nvmlShutdown", api.Shutdown);
    bind(api.handle, "nvmlErrorString", api.ErrorString);
    bind(api.handle, "nvmlDeviceGetCount_v2", api.DeviceGetCount);
    if (!api.DeviceGetCount) bind(api.handle, "nvmlDeviceGetCount", api.DeviceGetCount);
    bind(api.handle, "nvmlDeviceGetHandleByIndex_v2", api.DeviceGetHandleByIndex);
    if (!api.DeviceGetHandleByIndex) bind(api.handle, "nvmlDeviceGetHandleByIndex", api.DeviceGetHandleByIndex);
    const std::pair<const char*, bool> required[] = {
        {"nvmlInit_v2", api.Init != nullptr},
        {"nvmlShutdown", api.Shutdown != nullptr},
        {"nvmlDeviceGetCount_v2", api.DeviceGetCount != nullptr},
        {"nvmlDeviceGetHandleByIndex_v2", api.DeviceGetHandleByIndex != nullptr},
    };
    for (const auto& [name, ok] : required) {
        if (!ok) {
            const std::string path = api.path;
            api.unload();
            throw SensorError(ErrorCategory::LibraryMissing,
                              std::string("NVML library '") + path + "' lacks the required symbol " + name,
                              "update the NVIDIA driver, or point GREENPROBE_NVML_LIBRARY at a complete libnvidia-ml.so.1");
        }
    }
    bind(api.handle, "nvmlDeviceGetName", api.DeviceGetName);
    bind(api.handle, "nvmlSystemGetDriverVersion", api.SystemGetDriverVersion);
    bind(api.handle, "nvmlDeviceGetTotalEnergyConsumption", api.DeviceGetTotalEnergyConsumption);
    bind(api.handle, "nvmlDeviceGetPowerUsage", api.DeviceGetPowerUsage);
    bind(api.handle, "nvmlDeviceGetFieldValues", api.DeviceGetFieldValues);
    bind(api.handle, "nvmlDeviceGetUtilizationRates", api.DeviceGetUtilizationRates);
    bind(api.handle, "nvmlDeviceGetProcessUtilization", api.DeviceGetProcessUtilization);
    bind(api.handle, "nvmlDeviceGetProcessesUtilizationInfo", api.DeviceGetProcessesUtilizationInfo);
    bind(api.handle, "nvmlDeviceGetMemoryInfo", api.DeviceGetMemoryInfo);
    bind(api.handle, "nvmlDeviceGetUUID", api.DeviceGetUUID);
    bind(api.handle, "nvmlDeviceGetHandleByUUID", api.DeviceGetHandleByUUID);
    bind(api.handle, "nvmlDeviceGetIndex", api.DeviceGetIndex);
    bind(api.handle, "nvmlDeviceGetPciInfo_v3", api.DeviceGetPciInfo);
    if (!api.DeviceGetPciInfo) bind(api.handle, "nvmlDeviceGetPciInfo_v2", api.DeviceGetPciInfo);
    bind(api.handle, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", api.DeviceGetDeviceHandleFromMigDeviceHandle);
    bind(api.handle, "nvmlDeviceGetArchitecture", api.DeviceGetArchitecture);
    bind(api.handle, "nvmlDeviceGetMigMode", api.DeviceGetMigMode);
    bind(api.handle, "nvmlDeviceGetMaxMigDeviceCount", api.DeviceGetMaxMigDeviceCount);
    bind(api.handle, "nvmlDeviceGetMigDeviceHandleByIndex", api.DeviceGetMigDeviceHandleByIndex);
    bind(api.handle, "nvmlDeviceGetGpuInstanceId", api.DeviceGetGpuInstanceId);
    bind(api.handle, "nvmlDeviceGetComputeRunningProcesses_v3", api.DeviceGetComputeRunningProcesses);
    bind(api.handle, "nvmlGpmQueryDeviceSupport", api.GpmQueryDeviceSupport);
    bind(api.handle, "nvmlGpmSampleAlloc", api.GpmSampleAlloc);
    bind(api.handle, "nvmlGpmSampleFree", api.GpmSampleFree);
    bind(api.handle, "nvmlGpmMigSampleGet", api.GpmMigSampleGet);
    bind(api.handle, "nvmlGpmMetricsGet", api.GpmMetricsGet);

    const Return r = api.Init();
    if (r != kSuccess) {
        const std::string msg = "nvmlInit failed in '" + api.path + "': " + api.error_string(r);
        const ReturnClass rc = classify(r);
        api.unload();
        throw SensorError(rc.category, msg,
                          r == kErrorDriverNotLoaded ? "load the NVIDIA kernel driver (nvidia-smi should list the GPUs)"
                          : r == kErrorNoPermission  ? "give this user access to /dev/nvidia* (the video group)"
                                                     : kNoLibraryFix);
    }
    return api;
}

std::string Api::error_string(Return r) const {
    std::string s = "NVML error " + std::to_string(r);
    if (ErrorString) {
        const char* t = ErrorString(r);
        if (t) s += " (" + std::string(t) + ")";
    }
    return s;
}

void Api::unload() {
    if (handle) dlclose(handle);
    handle = nullptr;
}

}  // namespace greenprobe::nvml
