// NVML loaded at run time with dlopen (never linked), so the extension imports on machines
// without an NVIDIA driver. Only the types and symbols greenprobe uses are declared here,
// with NVML's real signatures.
#pragma once

#include <string>

#include "greenprobe/errors.hpp"

namespace greenprobe::nvml {

using Return = int;  // nvmlReturn_t
using Device = struct nvmlDevice_st*;

inline constexpr Return kSuccess = 0;
inline constexpr Return kErrorUninitialized = 1;
inline constexpr Return kErrorInvalidArgument = 2;
inline constexpr Return kErrorNotSupported = 3;
inline constexpr Return kErrorNoPermission = 4;
inline constexpr Return kErrorNotFound = 6;
inline constexpr Return kErrorInsufficientSize = 7;
inline constexpr Return kErrorDriverNotLoaded = 9;
inline constexpr Return kErrorTimeout = 10;
inline constexpr Return kErrorLibraryNotFound = 12;
inline constexpr Return kErrorFunctionNotFound = 13;
inline constexpr Return kErrorGpuIsLost = 15;
inline constexpr Return kErrorResetRequired = 16;
inline constexpr Return kErrorArgumentVersionMismatch = 25;
inline constexpr Return kErrorUnknown = 999;

inline constexpr unsigned kFieldTotalEnergyConsumption = 83;  // mJ since driver load
inline constexpr unsigned kFieldPowerInstant = 186;           // mW, "current GPU power"
// FieldValue::scopeId of the power fields (NVML_POWER_SCOPE_*): the GPU alone, or the whole module it
// sits on (GPU + the NVIDIA CPU beside it + memory: Grace Hopper), where the board reports it.
inline constexpr unsigned kPowerScopeGpu = 0;
inline constexpr unsigned kPowerScopeModule = 1;

union Value {
    double dVal;
    int siVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    unsigned short usVal;
};

struct FieldValue {  // nvmlFieldValue_t
    unsigned int fieldId;
    unsigned int scopeId;   // in: power scope (power fields) or NVLink id (NVLink fields)
    long long timestamp;    // out: µs since 1970 (CLOCK_REALTIME) when NVML fetched the value
    long long latencyUsec;  // out: how long NVML took to update the value
    int valueType;          // nvmlValueType_t
    Return nvmlReturn;
    Value value;
};

inline constexpr int kValueTypeDouble = 0;
inline constexpr int kValueTypeUInt = 1;
inline constexpr int kValueTypeULong = 2;
inline constexpr int kValueTypeULongLong = 3;
inline constexpr int kValueTypeSLongLong = 4;
inline constexpr int kValueTypeSInt = 5;

struct Utilization {  // nvmlUtilization_t: % of the last sample period (1/6 s to 1 s) busy
    unsigned int gpu;     // one or more kernels ran
    unsigned int memory;  // device memory was read or written
};

struct ProcessUtilizationSample {  // nvmlProcessUtilizationSample_t: one process in one sample period
    unsigned int pid;
    unsigned long long timeStamp;  // CPU timestamp in µs (the end of the driver's sample period)
    unsigned int smUtil;           // % of the period its kernels kept the SMs busy
    unsigned int memUtil;          // % of the period it read or wrote device memory
    unsigned int encUtil;
    unsigned int decUtil;
};

struct ProcessUtilizationInfo {  // nvmlProcessUtilizationInfo_v1_t: the same, from the newer call
    unsigned long long timeStamp;
    unsigned int pid;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
    unsigned int jpgUtil;
    unsigned int ofaUtil;
};

struct ProcessesUtilizationInfo {  // nvmlProcessesUtilizationInfo_v1_t (nvmlDeviceGetProcessesUtilizationInfo)
    unsigned int version;              // kProcessesUtilizationInfoV1
    unsigned int processSamplesCount;  // in: room in procUtilArray; out: how many
    unsigned long long lastSeenTimeStamp;
    ProcessUtilizationInfo* procUtilArray;
};

// NVML_STRUCT_VERSION(ProcessesUtilizationInfo, 1): the struct's size | version << 24
inline constexpr unsigned kProcessesUtilizationInfoV1 =
    static_cast<unsigned>(sizeof(ProcessesUtilizationInfo)) | (1u << 24);

struct Memory {  // nvmlMemory_t (v1), bytes
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
};

struct PciInfo {  // nvmlPciInfo_t (v2 and v3 layout)
    char busIdLegacy[16];  // "0000:18:00.0"
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];        // "00000000:18:00.0"
};

// MIG (Ampere and newer) and GPM (GPU performance monitoring, Hopper and newer): on a MIG-enabled GPU
// NVML gives no per-process utilisation; GPM gives each GPU instance's activity between two samples.
struct ProcessInfo {  // nvmlProcessInfo_v2_t (nvmlDeviceGetComputeRunningProcesses_v3)
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;      // 0xFFFFFFFF without MIG
    unsigned int computeInstanceId;  // 0xFFFFFFFF without MIG
};

using GpmSample = struct nvmlGpmSample_st*;

struct GpmMetric {  // nvmlGpmMetric_t
    unsigned int metricId;
    Return nvmlReturn;  // of this metric: value is valid only when 0
    double value;
    struct {
        char* shortName;
        char* longName;
        char* unit;
    } metricInfo;
};

// NVML_GPM_METRIC_MAX differs by header (98, 210, 333 in CUDA 13): the library reads numMetrics
// entries, so any room at least that large serves; this is the largest.
inline constexpr unsigned kGpmMetricMax = 333;
inline constexpr unsigned kGpmMetricsGetVersion = 1;  // NVML_GPM_METRICS_GET_VERSION
inline constexpr unsigned kGpmSupportVersion = 1;     // NVML_GPM_SUPPORT_VERSION
// NVML_GPM_METRIC_GRAPHICS_UTIL: % of the time any compute or graphics work was active on the GPU
// (on an instance's samples: on the instance), the activity Kepler reads from DCGM on MIG.
inline constexpr unsigned kGpmMetricGraphicsUtil = 1;
// The header's note: two samples should be more than 100 ms apart ("the internal sample refresh rate");
// a new sample is taken only where the latest is more than this old.
inline constexpr long long kGpmMinIntervalNs = 100'000'000;

struct GpmMetricsGet {  // nvmlGpmMetricsGet_t
    unsigned int version;
    unsigned int numMetrics;
    GpmSample sample1;
    GpmSample sample2;
    GpmMetric metrics[kGpmMetricMax];
};

struct GpmSupport {  // nvmlGpmSupport_t
    unsigned int version;
    unsigned int isSupportedDevice;
};

inline constexpr unsigned kUuidBufferSize = 96;  // NVML_DEVICE_UUID_V2_BUFFER_SIZE (GPU and MIG UUIDs)

// What a return code means to the sampler and to the user.
struct ReturnClass {
    ErrorCategory category;
    bool transient;  // retry on the next poll
    bool lost;       // the device is gone
};
ReturnClass classify(Return r);

struct Api {
    void* handle = nullptr;
    std::string path;

    Return (*Init)() = nullptr;
    Return (*Shutdown)() = nullptr;
    const char* (*ErrorString)(Return) = nullptr;
    Return (*DeviceGetCount)(unsigned int*) = nullptr;
    Return (*DeviceGetHandleByIndex)(unsigned int, Device*) = nullptr;
    // optional
    Return (*DeviceGetName)(Device, char*, unsigned int) = nullptr;
    Return (*SystemGetDriverVersion)(char*, unsigned int) = nullptr;
    Return (*DeviceGetTotalEnergyConsumption)(Device, unsigned long long*) = nullptr;
    Return (*DeviceGetPowerUsage)(Device, unsigned int*) = nullptr;
    Return (*DeviceGetFieldValues)(Device, int, FieldValue*) = nullptr;
    Return (*DeviceGetUtilizationRates)(Device, Utilization*) = nullptr;
    Return (*DeviceGetMemoryInfo)(Device, Memory*) = nullptr;
    Return (*DeviceGetProcessUtilization)(Device, ProcessUtilizationSample*, unsigned int*,
                                          unsigned long long) = nullptr;
    Return (*DeviceGetProcessesUtilizationInfo)(Device, ProcessesUtilizationInfo*) = nullptr;  // R535 and later
    // identity: which GPU is which (CUDA_VISIBLE_DEVICES by UUID, MIG instances, PCI bus ids)
    Return (*DeviceGetUUID)(Device, char*, unsigned int) = nullptr;
    Return (*DeviceGetHandleByUUID)(const char*, Device*) = nullptr;
    Return (*DeviceGetIndex)(Device, unsigned int*) = nullptr;
    Return (*DeviceGetPciInfo)(Device, PciInfo*) = nullptr;  // nvmlDeviceGetPciInfo_v3, else _v2
    Return (*DeviceGetDeviceHandleFromMigDeviceHandle)(Device, Device*) = nullptr;
    Return (*DeviceGetArchitecture)(Device, unsigned int*) = nullptr;  // nvmlDeviceArchitecture_t
    // MIG instances and their processes, and GPM: a MIG-enabled GPU's use per instance
    Return (*DeviceGetMigMode)(Device, unsigned int*, unsigned int*) = nullptr;
    Return (*DeviceGetMaxMigDeviceCount)(Device, unsigned int*) = nullptr;
    Return (*DeviceGetMigDeviceHandleByIndex)(Device, unsigned int, Device*) = nullptr;
    Return (*DeviceGetGpuInstanceId)(Device, unsigned int*) = nullptr;
    Return (*DeviceGetComputeRunningProcesses)(Device, unsigned int*, ProcessInfo*) = nullptr;  // _v3
    Return (*GpmQueryDeviceSupport)(Device, GpmSupport*) = nullptr;
    Return (*GpmSampleAlloc)(GpmSample*) = nullptr;
    Return (*GpmSampleFree)(GpmSample) = nullptr;
    Return (*GpmMigSampleGet)(Device, unsigned int, GpmSample) = nullptr;
    Return (*GpmMetricsGet)(GpmMetricsGet*) = nullptr;

    // Loads the library (soname libnvidia-ml.so.1 unless a path is given) and initialises NVML.
    // Throws SensorError (LibraryMissing, Permission, ...) naming the library or symbol and the fix.
    static Api load(const std::string& library);
    std::string error_string(Return r) const;
    void unload();
};

}  // namespace greenprobe::nvml
