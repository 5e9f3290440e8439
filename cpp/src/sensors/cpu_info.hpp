// CPU identity (/proc/cpuinfo) and topology (/sys/devices/system/cpu), from injectable roots.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace greenprobe {

struct CpuIdentity {
    std::string vendor_id;  // "GenuineIntel", "AuthenticAMD", "HygonGenuine", ... ("" when unknown)
    int family = -1;
    int model = -1;
    std::string model_name;
    int logical_cpus = 0;
};

CpuIdentity read_cpu_identity(const std::string& proc_root);

struct CpuTopology {
    // package id -> CPUs in that package, and for each CPU its core id.
    std::map<int, std::vector<int>> package_cpus;
    std::map<int, int> core_of_cpu;
    bool assumed = false;  // the sysfs tree was missing: one package with CPU 0 was assumed
};

CpuTopology read_cpu_topology(const std::string& sysfs_cpu_root);

}  // namespace greenprobe
