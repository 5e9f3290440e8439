// AMD SMI (libamd_smi.so) loaded at run time with dlopen, never linked, so that the extension
// imports on machines without ROCm. Only what greenprobe uses is declared here, with AMD SMI's real
// signatures.
//
// Read from ROCm/amdsmi include/amd_smi/amdsmi.h at commit 0ceca28f (2024-10-23, library version
// 24.7.0), at the tags rocm-5.7.0 (23.2), rocm-6.0.0 (23.4) to rocm-6.2.2 (24.6.3), and a 26.1.0
// header (ROCm 7). The functions used keep their signatures across all of them; two structures
// change, and are therefore never passed as the C++ type of one version:
//
//   amdsmi_version_t: {year, major, minor, release, build*} up to 24.x; {major, minor, release,
//       build*} from 25.0 (the year was dropped: ROCm 6.4). Both are 24 bytes with build at offset
//       16, so the first word tells them apart: a year is 23 or 24, a major of the new scheme 25 or
//       more. decode_version() does this.
//   amdsmi_power_info_t: three layouts (PowerLayout below), from 64 to 192 bytes. It is read into
//       a zeroed buffer far larger than any of them (kPowerInfoBuffer) and decoded by the library's
//       version, so that a newer library can never write past what we gave it; a library whose
//       version cannot be read gets no power reading at all rather than a guessed layout.
//   amdsmi_proc_info_t (amdsmi_get_gpu_process_list): two layouts (ProcLayout below), 224 and 704
//       bytes, chosen the same way, into a buffer of kProcInfoStride bytes an entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "greenprobe/errors.hpp"

namespace greenprobe::amdsmi {

using Status = uint32_t;        // amdsmi_status_t (0xFFFFFFFF is one of its values: unsigned)
using ProcessorHandle = void*;  // amdsmi_processor_handle
using SocketHandle = void*;     // amdsmi_socket_handle

inline constexpr uint64_t kInitAmdGpus = 1u << 1;  // AMDSMI_INIT_AMD_GPUS
inline constexpr uint32_t kProcessorTypeAmdGpu = 1;  // AMDSMI_PROCESSOR_TYPE_AMD_GPU (AMD_GPU before 6.0)
inline constexpr int kMemTypeVram = 0;               // AMDSMI_MEM_TYPE_VRAM
inline constexpr unsigned kUuidSize = 38;            // AMDSMI_GPU_UUID_SIZE (36 characters and a NUL)

inline constexpr Status kSuccess = 0;
inline constexpr Status kInval = 1;
inline constexpr Status kNotSupported = 2;
inline constexpr Status kNotYetImplemented = 3;
inline constexpr Status kFailLoadModule = 4;
inline constexpr Status kFailLoadSymbol = 5;
inline constexpr Status kDrmError = 6;
inline constexpr Status kApiFailed = 7;
inline constexpr Status kTimeout = 8;
inline constexpr Status kRetry = 9;
inline constexpr Status kNoPerm = 10;
inline constexpr Status kInterrupt = 11;
inline constexpr Status kIo = 12;
inline constexpr Status kFileError = 14;
inline constexpr Status kOutOfResources = 15;  // amdsmi_get_gpu_process_list: more processes than room
inline constexpr Status kInitError = 18;
inline constexpr Status kDirectoryNotFound = 20;  // 25.x
inline constexpr Status kBusy = 30;
inline constexpr Status kNotFound = 31;
inline constexpr Status kNotInit = 32;
inline constexpr Status kDriverNotLoaded = 34;
inline constexpr Status kNoData = 40;
inline constexpr Status kFileNotFound = 52;
inline constexpr Status kAmdgpuRestartErr = 54;
inline constexpr Status kUnknownError = 0xFFFFFFFFu;

// amdsmi_engine_usage_t: gfx_activity and umc_activity (%) lead in every version (5.7 had
// mm_activity[8] after them, 6.0 on one mm_activity and reserved words; 64 bytes either way).
struct EngineUsage {
    uint32_t gfx_activity;
    uint32_t umc_activity;
    uint32_t rest[14];
};

// amdsmi_bdf_t: a union of {function:3, device:5, bus:8, domain:48} with a uint64_t; decoded from
// the integer here rather than through bit-fields.
struct Bdf {
    uint64_t as_uint;
    unsigned function() const { return static_cast<unsigned>(as_uint & 0x7u); }
    unsigned device() const { return static_cast<unsigned>((as_uint >> 3) & 0x1Fu); }
    unsigned bus() const { return static_cast<unsigned>((as_uint >> 8) & 0xFFu); }
    uint64_t domain() const { return as_uint >> 16; }
    std::string text() const;  // "0000:0c:00.0", as amd-smi and lspci print it
};

// The raw amdsmi_version_t, decoded by decode_version().
struct RawVersion {
    uint32_t word[4];
    const char* build;
    uint64_t spare[4];  // room for a larger future layout
};

struct Version {
    bool known = false;
    unsigned year = 0;  // 23 or 24 in the old scheme, 0 in the new
    unsigned major = 0, minor = 0, release = 0;
    std::string text;   // "24.7.0.0" (year.major.minor.release) or "26.1.0" (major.minor.release)
};
Version decode_version(const RawVersion& raw);

// amdsmi_power_info_t, by version:
//   OldAverage (before 23.4, ROCm 5.x):   u32 average_socket_power, gfx/soc/mem voltage, power_limit, u32 reserved[11]
//   CurrentAverage (23.4 to 24.x, ROCm 6.0 to 6.3): u32 current_socket_power, u32 average_socket_power, ... u32 reserved[11]
//   SocketPower64 (25.0 on, ROCm 6.4 and 7): u64 socket_power, u32 current_socket_power, u32 average_socket_power,
//                                      u64 voltages x3, u32 power_limit, u64 reserved[18]
// Watts in every one; a member the board does not support reads UINT32_MAX (UINT16_MAX or 0 on
// some older boards).
enum class PowerLayout { Unknown, OldAverage, CurrentAverage, SocketPower64 };
PowerLayout power_layout(const Version& v);
const char* layout_name(PowerLayout l);

inline constexpr std::size_t kPowerInfoBuffer = 1024;  // bytes; the largest layout is 192
struct PowerReading {
    bool ok = false;
    double watts = 0.0;
    const char* member = "";  // which member was used: "socket_power", "current_socket_power", ...
};
// Picks the board's power from a power-info buffer of the given layout: socket_power, else
// current_socket_power (MI300 and newer), else average_socket_power (Navi, MI200 and older).
PowerReading decode_power(const unsigned char* buffer, PowerLayout layout);

// amdsmi_proc_info_t (one process on one GPU, amdsmi_get_gpu_process_list), by version:
//   Name32 (up to 24.x, ROCm 5.7 to 6.3): char name[32] (AMDSMI_NORMAL_STRING_LENGTH); u32 pid; u64 mem;
//       engine_usage {u64 gfx, u64 enc, u32 reserved[12]}; memory_usage {u64 gtt_mem, cpu_mem, vram_mem,
//       u32 reserved[10]}; char container_name[32]; u32 reserved[4]: 224 bytes, gfx at 48.
//   Name256 (25.0 on, ROCm 6.4 and 7): name and container_name of AMDSMI_MAX_STRING_LENGTH (256), then
//       cu_occupancy and later evicted_time, sdma_usage in what was reserved: 704 bytes, gfx at 272.
// engine_usage.gfx is the process's GFX engine time on that GPU in ns, counted since it opened the
// device (the amdgpu driver's fdinfo drm-engine-gfx, summed over its files): a cumulative count.
enum class ProcLayout { Unknown, Name32, Name256 };
ProcLayout proc_layout(const Version& v);
const char* proc_layout_name(ProcLayout l);
std::size_t proc_info_size(ProcLayout l);  // 224, 704; 0 for Unknown

// Room per entry given to the library: larger than any layout, so that a newer, larger one can never
// write past the buffer (its entries are then misread, never overrun).
inline constexpr std::size_t kProcInfoStride = 1024;
struct ProcessInfo {
    uint32_t pid = 0;
    uint64_t gfx_ns = 0;      // engine_usage.gfx: cumulative GFX engine time (ns)
    uint64_t enc_ns = 0;      // engine_usage.enc
    uint64_t mem_bytes = 0;   // mem
    uint64_t vram_bytes = 0;  // memory_usage.vram_mem
    std::string name;
};
ProcessInfo decode_process(const unsigned char* entry, ProcLayout layout);

// What a status means to the sampler and to the user.
struct StatusClass {
    ErrorCategory category;
    bool transient;  // try again on the next poll
    bool lost;       // the device went away (its sysfs files, its driver instance)
};
StatusClass classify(Status s);

struct Api {
    void* handle = nullptr;
    std::string path;
    Version version;

    // required
    Status (*Init)(uint64_t) = nullptr;
    Status (*ShutDown)() = nullptr;
    Status (*GetSocketHandles)(uint32_t*, SocketHandle*) = nullptr;
    Status (*GetProcessorHandles)(SocketHandle, uint32_t*, ProcessorHandle*) = nullptr;
    // optional
    Status (*GetProcessorType)(ProcessorHandle, uint32_t*) = nullptr;  // processor_type_t*
    Status (*StatusCodeToString)(Status, const char**) = nullptr;
    Status (*GetLibVersion)(RawVersion*) = nullptr;
    Status (*GetEnergyCount)(ProcessorHandle, uint64_t*, float*, uint64_t*) = nullptr;
    Status (*GetPowerInfo)(ProcessorHandle, void*) = nullptr;  // amdsmi_power_info_t*: see decode_power
    Status (*GetGpuActivity)(ProcessorHandle, EngineUsage*) = nullptr;
    Status (*GetGpuMemoryUsage)(ProcessorHandle, int, uint64_t*) = nullptr;  // amdsmi_memory_type_t
    Status (*GetGpuMemoryTotal)(ProcessorHandle, int, uint64_t*) = nullptr;
    Status (*GetGpuDeviceUuid)(ProcessorHandle, unsigned int*, char*) = nullptr;
    Status (*GetGpuDeviceBdf)(ProcessorHandle, Bdf*) = nullptr;
    // amdsmi_get_gpu_process_list(handle, uint32_t* max_processes, amdsmi_proc_info_t* list): see read_processes
    Status (*GetGpuProcessList)(ProcessorHandle, uint32_t*, void*) = nullptr;

    // Loads the library (soname libamd_smi.so unless a path is given), reads its version and
    // initialises it for AMD GPUs. Throws SensorError (LibraryMissing, Permission, ...) naming the
    // library or symbol and the fix.
    static Api load(const std::string& library);
    std::string error_string(Status s) const;  // "AMD SMI status 31 (AMDSMI_STATUS_NOT_FOUND ...)"
    // Reads the power of a GPU in the library's layout; status kNotSupported where the layout is unknown.
    Status read_power(ProcessorHandle h, PowerReading& out) const;
    // Why per-process use cannot be read from this library ("" when it can): no
    // amdsmi_get_gpu_process_list, or a version whose amdsmi_proc_info_t layout is not known.
    std::string process_list_support() const;
    // The processes on a GPU (count first, then the list; again with the larger count where the list
    // grew meanwhile: AMDSMI_STATUS_OUT_OF_RESOURCES); kNotSupported where process_list_support() says why.
    Status read_processes(ProcessorHandle h, std::vector<ProcessInfo>& out) const;
    void shut_down_and_unload();
};

// One AMD GPU as AMD SMI enumerates it: index N counts GPUs only, across sockets, in AMD SMI's order.
struct KnownGpu {
    unsigned index = 0;
    ProcessorHandle handle = nullptr;
    std::string uuid;    // as amd-smi prints it; empty if AMD SMI could not say
    std::string bus_id;  // "0000:0c:00.0"; empty if unknown
};
// Every AMD GPU of every socket; throws SensorError where the enumeration fails or finds none.
std::vector<KnownGpu> enumerate_gpus(const Api& api);

}  // namespace greenprobe::amdsmi
