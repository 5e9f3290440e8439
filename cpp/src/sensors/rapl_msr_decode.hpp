// Pure decoding of RAPL registers: no I/O, tested with recorded raw values.
// Sources: Intel SDM Vol. 3B section 14.9; Linux arch/x86/events/rapl.c and
// arch/x86/include/asm/msr-index.h (register addresses, 32-bit counters, unit quirks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "greenprobe/rapl_domains.hpp"  // Domain, powercap_name and the containment rule

namespace greenprobe::rapl {

enum class Vendor { Intel, Amd };

inline constexpr uint32_t kIntelPowerUnit = 0x606;
inline constexpr uint32_t kIntelPkgEnergy = 0x611;
inline constexpr uint32_t kIntelDramEnergy = 0x619;
inline constexpr uint32_t kIntelPp0Energy = 0x639;
inline constexpr uint32_t kIntelPp1Energy = 0x641;
inline constexpr uint32_t kIntelPsysEnergy = 0x64D;
inline constexpr uint32_t kAmdPowerUnit = 0xC0010299;
inline constexpr uint32_t kAmdCoreEnergy = 0xC001029A;
inline constexpr uint32_t kAmdPkgEnergy = 0xC001029B;

inline constexpr uint64_t kCounterMax = 0xFFFFFFFFull;  // energy status counters are 32 bits wide

struct DomainRegister {
    Domain domain;
    uint32_t msr;
    bool per_core;   // AMD's core counter exists once per physical core
    bool platform;   // psys: one per platform, read from the first package only
};

inline uint32_t unit_register(Vendor v) { return v == Vendor::Intel ? kIntelPowerUnit : kAmdPowerUnit; }

inline std::vector<DomainRegister> domain_registers(Vendor v) {
    if (v == Vendor::Intel) {
        return {{Domain::Package, kIntelPkgEnergy, false, false},
                {Domain::Core, kIntelPp0Energy, false, false},
                {Domain::Uncore, kIntelPp1Energy, false, false},
                {Domain::Dram, kIntelDramEnergy, false, false},
                {Domain::Psys, kIntelPsysEnergy, false, true}};
    }
    return {{Domain::Package, kAmdPkgEnergy, false, false}, {Domain::Core, kAmdCoreEnergy, true, false}};
}

// Energy Status Units: bits 12:8 of the unit register, energy step = 1 / 2^ESU joules.
// The same layout on Intel (0x606) and AMD (0xC0010299).
inline unsigned energy_status_units(uint64_t unit_register_value) {
    return static_cast<unsigned>((unit_register_value >> 8) & 0x1F);
}

// Intel family-6 models whose DRAM domain uses a fixed 2^-16 J unit (kernel RAPL_UNIT_QUIRK_INTEL_HSW),
// and those whose DRAM is 2^-16 J and PSYS 1 J (RAPL_UNIT_QUIRK_INTEL_SPR).
inline bool intel_dram_fixed_unit(int family, int model) {
    if (family != 6) return false;
    switch (model) {
        case 0x3F:  // Haswell-X
        case 0x4F:  // Broadwell-X
        case 0x56:  // Broadwell-D
        case 0x57:  // Xeon Phi KNL
        case 0x85:  // Xeon Phi KNM
        case 0x55:  // Skylake-X / Cascade Lake / Cooper Lake
        case 0x6A:  // Ice Lake-X
        case 0x6C:  // Ice Lake-D
        case 0x8F:  // Sapphire Rapids-X
        case 0xCF:  // Emerald Rapids-X
            return true;
        default:
            return false;
    }
}

inline bool intel_psys_fixed_unit(int family, int model) {
    return family == 6 && (model == 0x8F || model == 0xCF);
}

// Joules per raw step for one domain, given the unit register and the CPU model.
inline double joules_per_count(Vendor v, Domain d, uint64_t unit_register_value, int family, int model) {
    unsigned esu = energy_status_units(unit_register_value);
    if (v == Vendor::Intel) {
        if (d == Domain::Dram && intel_dram_fixed_unit(family, model)) esu = 16;
        if (d == Domain::Psys && intel_psys_fixed_unit(family, model)) esu = 0;
    }
    return 1.0 / static_cast<double>(1ull << esu);
}

// The power ceiling of a RAPL domain (ChannelInfo::max_power_w), by its powercap name: a step of
// the energy counter above it is a glitch, not energy. Generous on purpose, since a ceiling set too
// low would throw real energy away: the largest sockets today are rated 500 W (AMD EPYC 9005,
// Intel Xeon 6900P) and client chips peak near 250-360 W (PL2/PL4), so 1000 W per package-level
// domain (package, core, uncore, and dram: 12 channels x 2 DIMMs stay well below it), and 2000 W
// for psys, which covers the platform. Not the powercap constraints: they are settable limits, not
// what the silicon can draw, and often read 0.
inline double max_power_w(const std::string& powercap_domain_name) {
    return powercap_domain_name.compare(0, 4, "psys") == 0 ? 2000.0 : 1000.0;
}

// The counter part of an energy status register.
inline uint64_t energy_counter(uint64_t register_value) { return register_value & kCounterMax; }

}  // namespace greenprobe::rapl
