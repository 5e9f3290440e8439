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
    // identity: which GPU is which (CUDA_VISIBLE_DEVICES by UUID, MIG instances, PCI bus ids)
    Return (*DeviceGetUUID)(Device, char*, unsigned int) = nullptr;
    Return (*DeviceGetHandleByUUID)(const char*, Device*) = nullptr;
    Return (*DeviceGetIndex)(Device, unsigned int*) = nullptr;
    Return (*DeviceGetPciInfo)(Device, PciInfo*) = nullptr;  // nvmlDeviceGetPciInfo_v3, else _v2
    Return (*DeviceGetDeviceHandleFromMigDeviceHandle)(Device, Device*) = nullptr;
    Return (*DeviceGetArchitecture)(Device, unsigned int*) = nullptr;  // nvmlDeviceArchitecture_t

    // Loads the library (soname libnvidia-ml.so.1 unless a path is given) and initialises NVML.
    // Throws SensorError (LibraryMissing, Permission, ...) naming the library or symbol and the fix.
    static Api load(const std::string& library);
    std::string error_string(Return r) const;
    void unload();
};

}  // namespace greenprobe::nvml
